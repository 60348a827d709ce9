// Live updates, the one thing that needs JavaScript: an element with data-live-src has its
// content replaced by that URL's fragment every second, when the fragment changed.
(function () {
  "use strict";
  document.querySelectorAll("[data-live-src]").forEach(function (panel) {
    var status = document.getElementById(panel.dataset.liveStatus);
    var last = null;
    function refresh() {
      fetch(panel.dataset.liveSrc, { headers: { "Accept": "text/html" } })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (html !== null && html !== last) {
            if (last !== null) {
              panel.innerHTML = html;
              if (status) { status.textContent = "Updated " + new Date().toLocaleTimeString(); }
            }
            last = html;
          }
        })
        .catch(function () { if (status) { status.textContent = "Console unreachable; retrying."; } })
        .finally(function () { window.setTimeout(refresh, 1000); });
    }
    refresh();
  });
})();
