// flask-phoneverify pages: focus after an error, live countdowns on refused buttons, and the
// wait page following the call through the JSON status endpoint.
(function () {
  "use strict";

  // After an error, focus goes to the field it is about, else to the error itself.
  var invalid = document.querySelector("[aria-invalid=true]");
  var error = document.getElementById("pv-error");
  if (invalid) { invalid.focus(); } else if (error) { error.focus(); }

  // A button that may not be pressed yet counts down and is enabled when allowed.
  Array.prototype.forEach.call(document.querySelectorAll("button[data-wait]"), function (button) {
    var left = parseInt(button.getAttribute("data-wait"), 10) || 0;
    if (left <= 0) { return; }
    var label = button.textContent;
    var pattern = button.getAttribute("data-wait-text") || "{label} (in {seconds} s)";
    var until = Date.now() + left * 1000;
    function tick() {
      var now = Math.ceil((until - Date.now()) / 1000);
      if (now <= 0) {
        button.disabled = false;
        button.textContent = label;
        button.removeAttribute("aria-describedby");
        return;
      }
      button.disabled = true;
      button.textContent = pattern.replace("{label}", label).replace("{seconds}", String(now));
      setTimeout(tick, 250);
    }
    tick();
  });

  var box = document.getElementById("pv-wait");
  if (!box) { return; }
  var url = box.getAttribute("data-status-url") + "?token=" + encodeURIComponent(box.getAttribute("data-token"));
  var style = box.getAttribute("data-style");
  var message = document.getElementById("pv-message");
  var done = false;
  // Texts in the page's language, written into the page by its template.
  var texts = {};
  try { texts = JSON.parse(box.getAttribute("data-texts") || "{}"); } catch (e) { texts = {}; }
  var TITLES = texts.titles || {
    failed: "The call did not go through",
    expired: "This verification has expired",
    locked: "Too many wrong PINs",
    canceled: "Verification canceled"
  };
  var BAD = { failed: true, expired: true, locked: true };
  var delay = 2000;

  function finish(data) {
    done = true;
    var icon = box.querySelector(".pv-icon");
    if (icon) { icon.classList.remove("pv-ringing"); }
    if (data.status === "verified") {
      var claim = document.getElementById("pv-claim");
      if (claim) { message.textContent = texts.confirmed || "Confirmed. Taking you on…"; claim.submit(); }
      return;
    }
    box.querySelectorAll(".pv-pin, #pv-pin-form, #pv-claim, [data-open-only]").forEach(function (el) { el.hidden = true; });
    var title = document.getElementById("pv-title");
    if (title && TITLES[data.status]) {
      var before = title.textContent.trim();
      title.textContent = TITLES[data.status];
      if (before && document.title.indexOf(before) === 0) {  // the page's part of the title
        document.title = TITLES[data.status] + document.title.slice(before.length);
      }
    }
    if (BAD[data.status]) { message.classList.add("pv-error"); }
    var retry = document.getElementById("pv-retry");
    if (retry) { retry.hidden = false; }
    var talk = document.getElementById("pv-talk");
    if (talk && data.can_bridge) { talk.hidden = false; }
  }

  function poll() {
    if (done) { return; }
    fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.json().then(function (data) { return { status: r.status, data: data }; }); })
      .then(function (res) {
        var data = res.data || {};
        if (data.message) { message.textContent = data.message; }
        if (res.status >= 500) { setTimeout(poll, 5000); return; }
        if (res.status >= 400) { finish({ status: "expired" }); return; }  // the token is past use
        box.setAttribute("data-status", data.status);
        if (data.status !== "calling") { finish(data); return; }
        if (style === "spoken" && (data.call === "delivered" || data.call === "ended")) { delay = 4000; }
        setTimeout(poll, delay);
      })
      .catch(function () { setTimeout(poll, 5000); });
  }
  if (box.getAttribute("data-status") === "calling") { setTimeout(poll, 1000); } else { finish({ status: box.getAttribute("data-status") }); }
})();
