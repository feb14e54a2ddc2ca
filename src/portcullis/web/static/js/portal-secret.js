// A page that shows a new secret (an API key, a client secret) is the answer to the POST
// that made it. Turn its history entry into a plain GET of the page, so a reload fetches
// the page (which never shows the secret again) instead of submitting the form again
// (which would make another secret). The page's own URL is in `data-page`.
(function () {
  "use strict";
  var secret = document.querySelector("[data-secret]");
  var page = secret ? secret.getAttribute("data-page") : null;
  if (page && page.charAt(0) === "/" && window.history.replaceState) {
    window.history.replaceState(null, "", page);
  }
})();
