/*
 * Signing a decision in the browser, as tools/assay_review.py signs on a terminal:
 * fetch the statement, refuse what the server would refuse, fill in rationale, conditions,
 * printed name, key id and time, show it in words and as canonical JSON, ask for the password
 * again, sign the DSSE PAE of the canonical bytes with the non-extractable key, and send only
 * the envelope (with the one-time proof of the password check).
 */
(function () {
  "use strict";
  var C = window.AssayCanonical;
  var K = window.AssayKeys;
  var PAYLOAD_TYPE = "application/vnd.in-toto+json";
  var FINISHED = ["succeeded", "errored", "cancelled"];
  var MAX_AGE_MS = 10 * 60 * 1000; // the server accepts signed_at within 15 minutes

  var config = JSON.parse(document.getElementById("sign-config").textContent);
  var $ = function (id) { return document.getElementById(id); };
  var pending = null; // {statement, payload, keyRecord, at}

  function status(text, kind) {
    var box = $("sign-status");
    box.hidden = false;
    box.className = "status-box message message-" + (kind || "info");
    box.textContent = text;
  }

  function chosen() {
    var decision = document.querySelector("input[name=decision]:checked").value;
    var check = decision === "waive" ? $("id_check").value : "";
    return { decision: decision, check: check };
  }

  function showCheckField() {
    $("check-field").hidden = chosen().decision !== "waive";
  }

  /* Microseconds and +00:00, as Python's datetime.now(UTC).isoformat() writes. */
  function now() {
    return new Date().toISOString().replace(/\.(\d{3})Z$/, ".$1000+00:00");
  }

  function refuseUpFront(statement, choice) {
    var checks = statement.predicate.checks;
    var running = checks.filter(function (c) { return FINISHED.indexOf(c.status) < 0; });
    if (choice.decision !== "reject" && running.length) {
      throw new Error(
        "checks " + running.map(function (c) { return c.key; }).join(", ") +
        " have not finished; approve or waive once they have (a rejection may be signed at any time)"
      );
    }
    var blocking = checks.filter(function (c) { return c.blocking; }).map(function (c) { return c.key; });
    if (choice.decision === "waive" && blocking.indexOf(choice.check) < 0) {
      throw new Error("a waiver names one of the release's blocking checks (" + (blocking.join(", ") || "none") + ")");
    }
  }

  function fillIn(statement, words) {
    var p = statement.predicate;
    p.rationale = words.rationale;
    p.conditions = words.conditions;
    p.signer.key_id = words.keyId;
    p.signer.name = words.name;
    p.signed_at = now();
    return statement;
  }

  /* The statement in words: the same lines as the CLI's summary. */
  function summary(statement) {
    var p = statement.predicate, m = p.model_version, pol = p.policy, d = p.decision, s = p.signer;
    var lines = [
      ["Release", p.release],
      ["Model", m.family + "@" + m.version + " (weights sha256 " + m.weights_digest + ")"],
      ["Policy", pol.name + " v" + pol.version + " (" + pol.digest + ")"],
    ];
    p.checks.forEach(function (c) {
      lines.push(["Check " + c.key, c.kind + ", " + (c.blocking ? "blocking" : "advisory") +
        ", attempt " + c.attempt + ": " + c.status + " " + (c.verdict || "-") +
        "; evidence manifest " + (c.manifest_digest || "-")]);
    });
    lines.push(["Evidence digest", p.evidence_digest]);
    lines.push(["Decision", d.type + (d.check ? " of check " + d.check : "")]);
    lines.push(["Meaning", d.meaning]);
    lines.push(["Rationale", p.rationale]);
    lines.push(["Conditions", p.conditions.join("; ") || "none"]);
    lines.push(["Signer", s.name + " (" + s.username + "), key " + s.key_id]);
    lines.push(["Signed at", p.signed_at]);
    return lines;
  }

  function renderReview(statement, payload, sha) {
    var list = $("statement-words");
    list.textContent = "";
    summary(statement).forEach(function (pair) {
      var item = document.createElement("li");
      var name = document.createElement("strong");
      name.textContent = pair[0] + ": ";
      item.appendChild(name);
      item.appendChild(document.createTextNode(pair[1]));
      list.appendChild(item);
    });
    $("statement-json").textContent = new TextDecoder().decode(payload);
    $("statement-size").textContent = String(payload.length);
    $("statement-sha").textContent = sha;
    $("review").hidden = false;
    $("review-title").focus();
  }

  async function review(event) {
    event.preventDefault();
    $("review").hidden = true;
    var choice = chosen();
    var keyId = $("id_key").value;
    var rationale = $("id_rationale").value.trim();
    var name = $("id_name").value.trim();
    if (!keyId) return status("Choose a signing key held by this browser (make one on the Keys page).", "error");
    if (!rationale) return status("Write your rationale: it is part of what you sign.", "error");
    if (!name) return status("Your printed name is part of the signature.", "error");
    try {
      var query = new URLSearchParams({ decision: choice.decision });
      if (choice.check) query.set("check", choice.check);
      var answer = await K.api(config.statement_url + "?" + query.toString());
      var statement = answer.statement;
      refuseUpFront(statement, choice);
      var conditions = $("id_conditions").value.split("\n").map(function (c) { return c.trim(); })
        .filter(Boolean);
      fillIn(statement, { rationale: rationale, conditions: conditions, keyId: keyId, name: name });
      var payload = C.canonicalBytes(statement);
      var keyRecord = await K.get(config.username, keyId);
      if (!keyRecord) throw new Error("this browser no longer holds key " + keyId);
      pending = { statement: statement, payload: payload, keyRecord: keyRecord, at: Date.now() };
      renderReview(statement, payload, await C.sha256hex(payload));
      $("sign-status").hidden = true;
    } catch (err) {
      status("Nothing was signed: " + err.message + ".", "error");
    }
  }

  async function signAndSubmit(event) {
    event.preventDefault();
    if (!pending) return status("Review the statement first.", "error");
    if (Date.now() - pending.at > MAX_AGE_MS) {
      pending = null;
      $("review").hidden = true;
      return status("The statement was prepared more than ten minutes ago; review it again so that its time is current.", "error");
    }
    var password = $("id_password").value;
    $("id_password").value = "";
    if (!password) return status("Enter your password to sign.", "error");
    $("sign-button").disabled = true;
    try {
      status("Checking your password…", "info");
      var reauth = await K.api(config.reauth_url, { body: { password: password } });
      status("Signing in this browser…", "info");
      var signature = await K.sign(pending.keyRecord.keyPair.privateKey, C.pae(PAYLOAD_TYPE, pending.payload));
      var envelope = {
        payloadType: PAYLOAD_TYPE,
        payload: C.base64(pending.payload),
        signatures: [{ keyid: pending.keyRecord.keyId, sig: C.base64(signature) }],
      };
      var result = await K.api(config.submit_url, { body: { envelope: envelope, nonce: reauth.nonce } });
      pending = null;
      $("review").hidden = true;
      $("sign-form").hidden = true;
      $("choose").hidden = true;
      status(result.message, "success");
      var back = document.createElement("a");
      back.href = config.release_url;
      back.textContent = " Back to the release";
      $("sign-status").appendChild(back);
    } catch (err) {
      var advice = err.status === 409 ? " Review the statement again and sign that." : "";
      status("Not signed: " + err.message + "." + advice, "error");
      if (err.status === 409) { pending = null; $("review").hidden = true; }
    } finally {
      $("sign-button").disabled = false;
    }
  }

  async function fillKeys() {
    var select = $("id_key");
    select.textContent = "";
    if (!K.supported()) {
      status("This browser cannot sign (WebCrypto Ed25519 or IndexedDB is missing); use the command-line client.", "error");
      return;
    }
    var held = (await K.list(config.username)).filter(function (k) {
      return config.keys.indexOf(k.keyId) >= 0;
    });
    held.forEach(function (k) {
      var option = document.createElement("option");
      option.value = k.keyId;
      option.textContent = (k.label || "browser key") + " · " + k.keyId.slice(0, 16) + "…";
      select.appendChild(option);
    });
    if (!held.length) {
      var none = document.createElement("option");
      none.value = "";
      none.textContent = "no registered key of yours is held by this browser";
      select.appendChild(none);
      status("This browser holds no registered signing key of yours. Create one on the Keys page, then come back.", "warning");
    }
  }

  function start() {
    $("sign-form").hidden = false;
    document.querySelectorAll("input[name=decision]").forEach(function (radio) {
      radio.addEventListener("change", function () { showCheckField(); $("review").hidden = true; });
    });
    $("id_check").addEventListener("change", function () { $("review").hidden = true; });
    showCheckField();
    $("sign-form").addEventListener("submit", review);
    $("confirm").addEventListener("submit", signAndSubmit);
    $("edit-button").addEventListener("click", function () {
      pending = null;
      $("review").hidden = true;
      $("id_rationale").focus();
    });
    fillKeys().catch(function (err) { status("The keys of this browser could not be read: " + err.message, "error"); });
  }

  start();
})();
