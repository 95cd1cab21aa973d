/*
 * Reviewers' signing keys in this browser: Ed25519 keys made with WebCrypto as
 * non-extractable (the private key cannot be read out, not even by this script), kept in
 * IndexedDB per person, and registered with the server with proof of possession (the new key
 * signs "assay reviewer key registration v1", the username, the key id and a server
 * challenge, joined by newlines: audits.signing.key_proof_message).
 *
 * Also the page scripts' way of talking to the server: JSON with the CSRF token, and errors
 * turned into sentences.
 */
(function (global) {
  "use strict";
  var C = global.AssayCanonical;
  var DB_NAME = "assay-signing-keys";
  var STORE = "keys";
  var PROOF_CONTEXT = "assay reviewer key registration v1";

  function open() {
    return new Promise(function (resolve, reject) {
      var request = indexedDB.open(DB_NAME, 1);
      request.onupgradeneeded = function () {
        request.result.createObjectStore(STORE, { keyPath: "id" });
      };
      request.onsuccess = function () { resolve(request.result); };
      request.onerror = function () { reject(request.error); };
    });
  }

  async function transact(mode, work) {
    var db = await open();
    return new Promise(function (resolve, reject) {
      var tx = db.transaction(STORE, mode);
      var result = work(tx.objectStore(STORE));
      tx.oncomplete = function () { db.close(); resolve(result && result.result); };
      tx.onerror = function () { db.close(); reject(tx.error); };
      tx.onabort = function () { db.close(); reject(tx.error); };
    });
  }

  async function list(username) {
    var all = await transact("readonly", function (store) { return store.getAll(); });
    return (all || []).filter(function (k) { return k.username === username; });
  }

  async function get(username, keyId) {
    return transact("readonly", function (store) { return store.get(username + "/" + keyId); });
  }

  async function put(record) {
    return transact("readwrite", function (store) { return store.put(record); });
  }

  async function remove(username, keyId) {
    return transact("readwrite", function (store) { return store.delete(username + "/" + keyId); });
  }

  function supported() {
    return !!(global.crypto && crypto.subtle && global.indexedDB);
  }

  async function generate() {
    // Non-extractable: exportKey on the private key throws; only the public half leaves.
    var pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
    var raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
    return { pair: pair, raw: raw, keyId: await C.sha256hex(raw) };
  }

  async function sign(privateKey, bytes) {
    return new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, privateKey, bytes));
  }

  function csrfToken() {
    var field = document.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  /* fetch JSON; a refusal becomes an Error whose message is the server's sentence. */
  async function api(url, options) {
    options = options || {};
    var headers = { Accept: "application/json" };
    if (options.body !== undefined) {
      headers["Content-Type"] = "application/json";
      headers["X-CSRFToken"] = csrfToken();
    }
    var response;
    try {
      response = await fetch(url, {
        method: options.method || (options.body !== undefined ? "POST" : "GET"),
        headers: headers,
        credentials: "same-origin",
        body: options.body !== undefined ? JSON.stringify(options.body) : undefined,
      });
    } catch (err) {
      throw new Error("the server could not be reached; check your connection and try again");
    }
    var data = null;
    try { data = await response.json(); } catch (err) { data = null; }
    if (!response.ok) {
      var error = new Error(sentence(data, response.status));
      error.status = response.status;
      throw error;
    }
    return data;
  }

  function sentence(data, status) {
    if (data && typeof data.detail === "string") return data.detail;
    if (data && typeof data === "object") {
      var parts = [];
      Object.keys(data).forEach(function (key) {
        var value = Array.isArray(data[key]) ? data[key].join(" ") : String(data[key]);
        parts.push(key + ": " + value);
      });
      if (parts.length) return parts.join("; ");
    }
    if (status === 403) return "you may not do this";
    if (status === 429) return "too many attempts; wait a while and try again";
    return "the server refused the request (HTTP " + status + ")";
  }

  /* Make a key here and register it for `username` (proof of possession). */
  async function createAndRegister(username, label, urls) {
    var made = await generate();
    var record = {
      id: username + "/" + made.keyId,
      username: username,
      keyId: made.keyId,
      publicKey: C.base64(made.raw),
      label: label,
      created: new Date().toISOString(),
      keyPair: made.pair,
    };
    await put(record);
    try {
      var challenge = (await api(urls.challenge)).challenge;
      var message = C.utf8([PROOF_CONTEXT, username, made.keyId, challenge].join("\n"));
      var proof = await sign(made.pair.privateKey, message);
      await api(urls.register, {
        body: {
          public_key: record.publicKey,
          label: label,
          challenge: challenge,
          proof: C.base64(proof),
        },
      });
    } catch (err) {
      await remove(username, made.keyId);
      throw err;
    }
    return record;
  }

  global.AssayKeys = {
    supported: supported,
    list: list,
    get: get,
    remove: remove,
    sign: sign,
    api: api,
    createAndRegister: createAndRegister,
    PROOF_CONTEXT: PROOF_CONTEXT,
  };
})(window);
