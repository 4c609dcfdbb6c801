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

// The new-case form checks the SOP's consent rules as the caseworker types: the person's
// consent, and a guardian's for a child (by the case type, or an age under the SOP's). The
// server checks the same rules when the form is sent.
(function () {
  "use strict";
  var form = document.getElementById("new-case");
  if (!form) {
    return;
  }
  var adult = parseInt(form.getAttribute("data-guardian-age"), 10);
  var consentRequired = form.getAttribute("data-consent-required") === "true";
  function check() {
    var type = form.querySelector("#case_type");
    var option = type && type.options[type.selectedIndex];
    var age = parseInt(form.querySelector("#age").value, 10);
    var child = (option && option.getAttribute("data-guardian") === "true") ||
      (!isNaN(adult) && !isNaN(age) && age < adult);
    var person = form.querySelector("#consent_given").checked;
    var guardian = form.querySelector("#guardian_given").checked;
    form.querySelector("#consent-warning").hidden = !consentRequired || person;
    form.querySelector("#guardian-warning").hidden = !consentRequired || !child || guardian;
  }
  form.addEventListener("input", check);
  form.addEventListener("change", check);
})();
