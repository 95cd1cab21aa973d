/*
 * Checking a ledger event's inclusion in the browser, trusting nothing the server says
 * without a check: the checkpoint's Ed25519 signature against the server's key (whose id the
 * auditor compares with the one they keep), the event's bytes against its entry hash, and the
 * RFC 6962 audit path from the event's leaf hash to the signed root (RFC 9162 section 2.1.3.2,
 * as audits/merkle.py verify_inclusion).
 */
(function () {
  "use strict";
  var C = window.AssayCanonical;
  var checkpoint = null;

  async function getJSON(url) {
    var response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    var data = null;
    try { data = await response.json(); } catch (err) { data = null; }
    if (!response.ok) throw new Error((data && data.detail) || "HTTP " + response.status + " from " + url);
    return data;
  }

  async function nodeHash(left, right) {
    return C.sha256(C.concat([new Uint8Array([1]), left, right]));
  }

  function equal(a, b) {
    if (a.length !== b.length) return false;
    for (var i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }

  async function verifyInclusion(index, size, leaf, proof, root) {
    if (index < 0 || index >= size) return false;
    var fn = index, sn = size - 1, r = leaf;
    for (var i = 0; i < proof.length; i++) {
      var p = proof[i];
      if (sn === 0) return false;
      if (fn % 2 === 1 || fn === sn) {
        r = await nodeHash(p, r);
        while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
      } else {
        r = await nodeHash(r, p);
      }
      fn = Math.floor(fn / 2);
      sn = Math.floor(sn / 2);
    }
    return sn === 0 && equal(r, root);
  }

  async function signedCheckpoint(fresh) {
    if (checkpoint && !fresh) return checkpoint;
    var point = await getJSON("/api/v1/ledger/checkpoint/");
    var key = await getJSON("/api/v1/ledger/public-key/");
    var raw = C.fromBase64(key.public_key);
    if ((await C.sha256hex(raw)) !== key.key_id || key.key_id !== point.key_id) {
      throw new Error("the server's key does not match the key id that signed the checkpoint");
    }
    var publicKey = await crypto.subtle.importKey("raw", raw, { name: "Ed25519" }, false, ["verify"]);
    var ok = await crypto.subtle.verify({ name: "Ed25519" }, publicKey, C.fromBase64(point.signature), C.utf8(point.body));
    if (!ok) throw new Error("the checkpoint's signature does not verify with the server's key");
    var body = JSON.parse(point.body);
    checkpoint = { size: body.tree_size, root: C.fromHex(body.root_hash), rootHex: body.root_hash, keyId: key.key_id };
    return checkpoint;
  }

  async function verify(seq) {
    var point = await signedCheckpoint(false);
    if (seq > point.size) point = await signedCheckpoint(true);
    var event = await getJSON("/api/v1/audit-events/" + seq + "/");
    var body = C.utf8(event.body);
    if ((await C.sha256hex(body)) !== event.entry_hash) throw new Error("the event's bytes do not hash to its entry hash");
    if (JSON.parse(event.body).seq !== seq) throw new Error("the event's bytes name another sequence number");
    var leaf = await C.sha256(C.concat([new Uint8Array([0]), body]));
    var proof = await getJSON("/api/v1/ledger/inclusion/?seq=" + seq + "&tree_size=" + point.size);
    var path = proof.audit_path.map(C.fromHex);
    if (!(await verifyInclusion(seq - 1, point.size, leaf, path, point.root))) {
      throw new Error("the inclusion proof does not lead to the signed root");
    }
    return point;
  }

  document.querySelectorAll(".js-only").forEach(function (e) { e.hidden = false; });
  document.querySelectorAll("button.verify").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", async function () {
      var seq = Number(button.dataset.seq);
      var out = document.getElementById("verify-" + seq);
      out.className = "verify-result";
      out.textContent = "checking…";
      try {
        var point = await verify(seq);
        out.classList.add("ok");
        out.textContent = "✓ included in the ledger the server signed at size " + point.size +
          " (root " + point.rootHex.slice(0, 12) + "…, key " + point.keyId.slice(0, 12) + "…), checked here";
      } catch (err) {
        out.classList.add("bad");
        out.textContent = "✗ " + err.message;
      }
    });
  });
  window.AssayLedger = { verify: verify, verifyInclusion: verifyInclusion };
})();
