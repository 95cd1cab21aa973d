/* The Keys page: make a key in this browser and register it (proof of possession), and list
 * the keys this browser holds for the signed-in person. */
(function () {
  "use strict";
  var K = window.AssayKeys;
  var config = JSON.parse(document.getElementById("keys-config").textContent);
  var $ = function (id) { return document.getElementById(id); };
  var urls = { challenge: config.challenge_url, register: config.register_url };

  function say(text, kind) {
    var box = $("key-status");
    box.hidden = false;
    box.className = "message message-" + (kind || "info");
    box.textContent = text;
  }

  async function showHeld() {
    var list = $("browser-keys");
    list.textContent = "";
    var held = await K.list(config.username);
    if (!held.length) {
      var none = document.createElement("li");
      none.textContent = "This browser holds no key of yours.";
      list.appendChild(none);
      return;
    }
    held.forEach(function (k) {
      var item = document.createElement("li");
      var registered = config.registered.indexOf(k.keyId) >= 0;
      var code = document.createElement("code");
      code.className = "digest";
      code.textContent = k.keyId;
      item.appendChild(document.createTextNode((k.label || "browser key") + " · "));
      item.appendChild(code);
      item.appendChild(document.createTextNode(registered ? " · registered and active" : " · not active (revoked or not registered)"));
      if (!registered) {
        var forget = document.createElement("button");
        forget.type = "button";
        forget.className = "small";
        forget.textContent = "Remove from this browser";
        forget.addEventListener("click", async function () {
          await K.remove(config.username, k.keyId);
          showHeld();
        });
        item.appendChild(document.createTextNode(" "));
        item.appendChild(forget);
      }
      list.appendChild(item);
    });
  }

  async function create(event) {
    event.preventDefault();
    var button = $("create-button");
    button.disabled = true;
    say("Making a key and proving to the server that you hold it…", "info");
    try {
      var record = await K.createAndRegister(config.username, $("id_label").value.trim(), urls);
      say("Key " + record.keyId + " is registered. Reloading the list…", "success");
      window.setTimeout(function () { window.location.reload(); }, 800);
    } catch (err) {
      say("No key was registered: " + err.message + ".", "error");
      button.disabled = false;
    }
  }

  if (!K.supported()) {
    say("This browser cannot make signing keys (WebCrypto Ed25519 or IndexedDB is missing); use the command-line client.", "error");
    return;
  }
  $("create-key").hidden = false;
  $("create-key").addEventListener("submit", create);
  showHeld().catch(function (err) { say("The keys of this browser could not be read: " + err.message, "error"); });
})();
