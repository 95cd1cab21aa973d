/* Small behaviour every page shares; every page also works without it. */
(function () {
  "use strict";
  // Forms that undo something ask first (the server decides either way).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form && form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });
  // A polled region is not refreshed while focus is inside it (a keyboard user would lose
  // their place); it refreshes at the next tick after focus leaves.
  document.addEventListener("htmx:beforeRequest", function (event) {
    var element = event.detail.elt;
    if (element && element.contains(document.activeElement) && document.activeElement !== document.body) {
      event.preventDefault();
    }
  });
})();
