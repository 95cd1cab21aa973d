/*
 * RFC 8785 canonical JSON (JSON Canonicalization Scheme), DSSE's pre-authentication encoding,
 * base64 and sha256: the same bytes as the server's audits/canonical.py and audits/signing.py.
 *
 * RFC 8785 serialises numbers and strings exactly as ECMAScript's JSON.stringify does, and
 * sorts object keys by their UTF-16 code units, which is how JavaScript compares strings; what
 * is left to do here is refusing what has no canonical form (NaN, infinity, lone surrogates,
 * undefined, functions) and laying out objects and arrays without whitespace.
 */
(function (global) {
  "use strict";

  function wellFormed(text) {
    if (typeof text.isWellFormed === "function") return text.isWellFormed();
    return !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?:^|[^\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(text);
  }

  function string(text) {
    if (!wellFormed(text)) throw new Error("a string contains a lone UTF-16 surrogate");
    return JSON.stringify(text);
  }

  function number(value) {
    if (!Number.isFinite(value)) throw new Error("NaN and infinity have no JSON form");
    return JSON.stringify(value); // ECMAScript Number::toString; -0 becomes "0"
  }

  function encode(value) {
    if (value === null) return "null";
    switch (typeof value) {
      case "boolean":
        return value ? "true" : "false";
      case "number":
        return number(value);
      case "string":
        return string(value);
      case "object":
        if (Array.isArray(value)) return "[" + value.map(encode).join(",") + "]";
        return (
          "{" +
          Object.keys(value)
            .sort()
            .map(function (key) {
              return string(key) + ":" + encode(value[key]);
            })
            .join(",") +
          "}"
        );
      default:
        throw new Error(typeof value + " has no canonical JSON form");
    }
  }

  function utf8(text) {
    return new TextEncoder().encode(text);
  }

  function concat(parts) {
    var length = parts.reduce(function (n, p) { return n + p.length; }, 0);
    var out = new Uint8Array(length);
    var offset = 0;
    parts.forEach(function (p) { out.set(p, offset); offset += p.length; });
    return out;
  }

  /* DSSE v1: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, lengths in bytes. */
  function pae(payloadType, payload) {
    var type = utf8(payloadType);
    var head = utf8("DSSEv1 " + type.length + " " + payloadType + " " + payload.length + " ");
    return concat([head, payload]);
  }

  function base64(bytes) {
    var binary = "";
    for (var i = 0; i < bytes.length; i += 0x8000) {
      binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(binary);
  }

  function fromBase64(text) {
    var binary = atob(text);
    var out = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
    return out;
  }

  function hex(bytes) {
    return Array.prototype.map
      .call(bytes, function (b) { return b.toString(16).padStart(2, "0"); })
      .join("");
  }

  function fromHex(text) {
    var out = new Uint8Array(text.length / 2);
    for (var i = 0; i < out.length; i++) out[i] = parseInt(text.substr(2 * i, 2), 16);
    return out;
  }

  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }

  global.AssayCanonical = {
    canonicalize: encode,
    canonicalBytes: function (value) { return utf8(encode(value)); },
    pae: pae,
    utf8: utf8,
    concat: concat,
    base64: base64,
    fromBase64: fromBase64,
    hex: hex,
    fromHex: fromHex,
    sha256: sha256,
    sha256hex: async function (bytes) { return hex(await sha256(bytes)); },
  };
})(window);
