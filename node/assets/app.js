// Passerelle's only script: notifications while a page is open, from the node's own
// server-sent events (/events). No internet service, nothing stored in the browser. Each
// notification is a line above the page that links to the referral; it stays until closed.
(function () {
  "use strict";
  var box = document.getElementById("notifications");
  if (!box || !window.EventSource) {
    return;
  }
  var source = new EventSource("/events");
  source.addEventListener("referrals", function (e) {
    var list;
    try {
      list = JSON.parse(e.data);
    } catch (err) {
      return;
    }
    list.forEach(function (n) {
      var line = document.createElement("div");
      line.className = "notice notification " + n.kind;
      line.setAttribute("role", "status");
      var link = document.createElement("a");
      link.href = n.url;
      link.textContent = n.text;
      line.appendChild(link);
      var close = document.createElement("button");
      close.type = "button";
      close.className = "secondary close";
      close.textContent = "×";
      close.setAttribute("aria-label", box.getAttribute("data-close") || "×");
      close.addEventListener("click", function () {
        line.remove();
      });
      line.appendChild(close);
      box.insertBefore(line, box.firstChild);
    });
  });
})();
