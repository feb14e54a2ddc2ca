// The portal's try-it console (no inline scripts: CSP script-src 'self').
// - choosing an API version submits the small GET form (shows its operations);
// - choosing an operation fills method and path (and, for a body, its type and example);
// - the key field is filled from sessionStorage when the key page offered "use in
//   console" (an element with data-tryit-use-key="<key>" puts it there); the key never
//   goes to the server except in the request the developer sends.
(function () {
  "use strict";
  var STORE = "portcullis.tryit.key";
  function ready(fn) {
    if (document.readyState !== "loading") { fn(); } else { document.addEventListener("DOMContentLoaded", fn); }
  }
  ready(function () {
    var choose = document.querySelector("[data-tryit-choose]");
    if (choose) {
      choose.addEventListener("change", function () {
        var parts = choose.value.split("|");
        document.querySelector("[data-tryit-api]").value = parts[0] || "";
        document.querySelector("[data-tryit-version]").value = parts[1] || "";
        if (choose.value) { choose.form.submit(); }
      });
    }
    var op = document.querySelector("[data-tryit-op]");
    if (op) {
      op.addEventListener("change", function () {
        var option = op.options[op.selectedIndex];
        if (!option || !option.dataset.path) { return; }
        document.getElementById("tryit-method").value = option.dataset.method;
        document.getElementById("tryit-path").value = option.dataset.path;
        var headers = document.getElementById("tryit-headers");
        var body = document.getElementById("tryit-body");
        if (option.dataset.contentType && !/content-type/i.test(headers.value)) {
          headers.value = (headers.value ? headers.value + "\n" : "") + "Content-Type: " + option.dataset.contentType;
        }
        if (option.dataset.example && !body.value) { body.value = option.dataset.example; }
      });
    }
    var key = document.querySelector("[data-tryit-key]");
    if (key) {
      try {
        var kept = window.sessionStorage.getItem(STORE);
        if (kept && !key.value) { key.value = kept; }
      } catch (e) { /* storage disabled: paste the key */ }
    }
    document.querySelectorAll("[data-tryit-use-key]").forEach(function (button) {
      button.addEventListener("click", function () {
        try { window.sessionStorage.setItem(STORE, button.dataset.tryitUseKey); } catch (e) { /* ignore */ }
      });
    });
  });
})();
