// Presence on a config entity's page (web/dashboard/manage.py): who else has it open, and
// a warning as soon as someone saves it, over the control plane's WebSocket
// (docs/realtime.md: presence.join, presence, changed). No inline script: CSP script-src 'self'.
(function () {
  "use strict";
  var box = document.getElementById("presence");
  if (!box || !window.WebSocket) { return; }
  var resource = box.getAttribute("data-resource");
  var state = box.getAttribute("data-state") || "viewing";
  var etag = box.getAttribute("data-etag") || "";
  var url = box.getAttribute("data-ws");
  if (!resource || !url) { return; }
  if (url.charAt(0) === "/") {
    url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + url;
  }
  var members = box.querySelector(".presence-members");
  var changed = box.querySelector(".presence-changed");
  var session = null;
  var socket = new WebSocket(url);

  function who(member) {
    return String(member.actor || "someone").replace(/^user:/, "") + " (" + member.state + ")";
  }

  function showMembers(list) {
    var others = list.filter(function (m) { return m.session !== session; });
    members.textContent = others.length
      ? "Also here: " + others.map(who).join(", ")
      : "No one else has this open.";
    box.setAttribute("data-others", String(others.length));
  }

  function showChanged(message) {
    if (!message.etag && !message.deleted) { return; }
    if (message.etag === etag) { return; }
    var by = String(message.by || "someone").replace(/^user:/, "");
    changed.textContent = message.deleted
      ? "Deleted by " + by + " since you opened it."
      : "Changed by " + by + " (config version " + message.version + ") since you opened it: " +
        "saving will show both versions to merge, or reload to see theirs.";
    changed.hidden = false;
  }

  socket.addEventListener("open", function () {
    socket.send(JSON.stringify({ type: "presence.join", resource: resource, state: state }));
  });
  socket.addEventListener("message", function (event) {
    var message;
    try { message = JSON.parse(event.data); } catch (e) { return; }
    if (message.type === "welcome") { session = message.session; }
    else if (message.type === "presence" && message.resource === resource) { showMembers(message.members || []); }
    else if (message.type === "changed" && message.resource === resource) { showChanged(message); }
  });
  window.addEventListener("pagehide", function () { socket.close(); });
})();
