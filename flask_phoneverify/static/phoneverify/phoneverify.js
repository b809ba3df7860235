// flask-phoneverify wait page: follows the call live through the JSON status endpoint.
(function () {
  "use strict";
  var box = document.getElementById("pv-wait");
  if (!box) { return; }
  var url = box.getAttribute("data-status-url") + "?token=" + encodeURIComponent(box.getAttribute("data-token"));
  var style = box.getAttribute("data-style");
  var message = document.getElementById("pv-message");
  var done = false;
  var TITLES = {
    failed: "The call did not go through",
    expired: "This verification has expired",
    locked: "Too many wrong PINs",
    canceled: "Verification canceled"
  };
  var delay = 2000;

  function finish(data) {
    done = true;
    var icon = box.querySelector(".pv-icon");
    if (icon) { icon.classList.remove("pv-ringing"); }
    if (data.status === "verified") {
      var claim = document.getElementById("pv-claim");
      if (claim) { message.textContent = "Confirmed. Taking you on…"; claim.submit(); }
      return;
    }
    box.querySelectorAll(".pv-pin, #pv-pin-form, #pv-claim, [data-open-only]").forEach(function (el) { el.hidden = true; });
    var title = document.getElementById("pv-title");
    if (title && TITLES[data.status]) { title.textContent = TITLES[data.status]; }
    var retry = document.getElementById("pv-retry");
    if (retry) { retry.hidden = false; }
    var talk = document.getElementById("pv-talk");
    if (talk && data.can_bridge) { talk.hidden = false; }
  }

  function poll() {
    if (done) { return; }
    fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.json().then(function (data) { return { ok: r.ok, data: data }; }); })
      .then(function (res) {
        var data = res.data || {};
        if (data.message) { message.textContent = data.message; }
        if (!res.ok) { done = true; return; }
        box.setAttribute("data-status", data.status);
        if (data.status !== "calling") { finish(data); return; }
        if (style === "spoken" && (data.call === "delivered" || data.call === "ended")) { delay = 4000; }
        setTimeout(poll, delay);
      })
      .catch(function () { setTimeout(poll, 5000); });
  }
  if (box.getAttribute("data-status") === "calling") { setTimeout(poll, 1000); } else { finish({ status: box.getAttribute("data-status") }); }
})();
