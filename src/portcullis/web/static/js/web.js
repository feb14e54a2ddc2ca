// Portcullis web applications: what every page runs (no inline scripts: CSP script-src 'self').
// htmx sends the session's CSRF token with every request it makes (web/csrf.py checks it).
(function () {
  "use strict";
  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }
  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRF-Token"] = csrfToken();
  });
  // After htmx swaps in new content, move focus to a swapped region that asks for it
  // (keyboard and screen-reader users then land on the result).
  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail.target;
    var focus = target && target.querySelector ? target.querySelector("[data-autofocus]") : null;
    if (focus) { focus.focus(); }
  });
  window.Portcullis = window.Portcullis || {};
  window.Portcullis.csrfToken = csrfToken;
})();
