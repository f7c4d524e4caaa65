/* crm-gateway: passkeys and security keys (WebAuthn) on our pages. The only script we serve;
   allowed by each page's nonce, nothing inline. A form with class "webauthn" carries the
   server's options (data-options, JSON with base64url bytes) and its translated messages;
   this asks the browser for a passkey, puts its answer (JSON, base64url bytes) into the form's
   hidden field and sends the form. Every other factor's form works without it. */
(function () {
  "use strict";

  function decode(text) {
    var base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (base64.length % 4) base64 += "=";
    var binary = atob(base64);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes.buffer;
  }

  function encode(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function decodeIds(list) {
    (list || []).forEach(function (item) { item.id = decode(item.id); });
  }

  function answer(credential) {
    var r = credential.response;
    var out = {
      id: credential.id,
      rawId: encode(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: credential.getClientExtensionResults ? credential.getClientExtensionResults() : {},
      response: { clientDataJSON: encode(r.clientDataJSON) }
    };
    if (r.attestationObject) {
      out.response.attestationObject = encode(r.attestationObject);
      out.response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      out.response.authenticatorData = encode(r.authenticatorData);
      out.response.signature = encode(r.signature);
      out.response.userHandle = r.userHandle ? encode(r.userHandle) : null;
    }
    return JSON.stringify(out);
  }

  function ask(form) {
    var options = JSON.parse(form.dataset.options);
    options.challenge = decode(options.challenge);
    if (form.dataset.ceremony === "create") {
      options.user.id = decode(options.user.id);
      decodeIds(options.excludeCredentials);
      return navigator.credentials.create({ publicKey: options });
    }
    decodeIds(options.allowCredentials);
    return navigator.credentials.get({ publicKey: options });
  }

  function why(form, error) {
    var name = error && error.name;
    if (name === "NotAllowedError" || name === "AbortError") return form.dataset.cancelled;
    if (name === "InvalidStateError") return form.dataset.exists;
    if (name === "SecurityError") return form.dataset.wrongAddress;
    return form.dataset.failed;
  }

  function wire(form) {
    var button = form.querySelector("button[type=submit]");
    var status = form.querySelector(".webauthn-status");
    var say = function (text) {
      status.textContent = text || "";
      status.hidden = !text;
    };
    if (!window.PublicKeyCredential || !navigator.credentials) {
      say(form.dataset.unsupported);
      return;
    }
    say(""); // the page's "needs JavaScript": it has it
    button.disabled = false;
    // A disabled button cannot take the autofocus the page asks for: when the browser ran
    // autofocus before this script, the button is focused now, unless the person has
    // moved on to something else.
    var active = document.activeElement;
    if (button.autofocus && (!active || active === document.body)) {
      button.focus();
    }
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      button.disabled = true;
      say(form.dataset.waiting);
      Promise.resolve().then(function () { return ask(form); }).then(function (credential) {
        form.querySelector("input[name=" + form.dataset.field + "]").value = answer(credential);
        form.submit(); // submit() does not fire this listener again
      }).catch(function (error) {
        say(why(form, error));
        button.disabled = false;
        button.focus();
      });
    });
  }

  document.querySelectorAll("form.webauthn").forEach(wire);
})();
