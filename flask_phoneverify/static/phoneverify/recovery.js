// flask-phoneverify recovery codes page: a "Copy the codes" button where the clipboard works.
(function () {
  "use strict";
  var button = document.getElementById("pv-copy");
  var said = document.getElementById("pv-copied");
  if (!button || !navigator.clipboard) { return; }
  button.hidden = false;
  button.addEventListener("click", function () {
    navigator.clipboard.writeText(button.getAttribute("data-codes")).then(
      function () { said.textContent = button.getAttribute("data-copied") || "Copied."; },
      function () {
        said.textContent = button.getAttribute("data-copy-failed") ||
          "Copying did not work here: download them or write them down.";
      }
    );
  });
})();
