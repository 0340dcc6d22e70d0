// flowbot console: small enhancements; every page works without them.
(function () {
  "use strict";
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  // Type-ahead for options_from fields: fill the <datalist> as the person types.
  document.querySelectorAll("input[data-options]").forEach(function (input) {
    var list = document.getElementById(input.getAttribute("list"));
    var timer = null, asked = 0;
    function load() {
      var mine = ++asked;  // an older answer arriving late must not replace a newer one
      fetch(input.dataset.options + "?q=" + encodeURIComponent(input.value), {credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.json() : []; })
        .then(function (options) {
          if (mine !== asked) { return; }
          list.textContent = "";
          options.forEach(function (o) {
            var opt = document.createElement("option");
            opt.value = o.value; opt.label = o.label; opt.textContent = o.label;
            list.appendChild(opt);
          });
        }).catch(function () {});
    }
    input.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(load, 150); });
    input.addEventListener("focus", load, {once: true});
  });

  // Live board: the server says when runs moved; the board reloads its columns (at most every 2 s).
  var board = document.querySelector("[data-live]");
  if (board && window.EventSource) {
    var status = document.querySelector(".live");
    var pending = false, last = 0;
    function refresh() {
      pending = false; last = Date.now();
      fetch(board.dataset.fragment, {credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) { board.innerHTML = html; } })
        .catch(function () {});
    }
    var source = new EventSource(board.dataset.live);
    source.addEventListener("changed", function () {
      if (pending) { return; }
      pending = true;
      setTimeout(refresh, Math.max(0, 2000 - (Date.now() - last)));
    });
    source.onopen = function () { if (status) { status.textContent = "Live"; } };
    source.onerror = function () { if (status) { status.textContent = "Reconnecting…"; } };
  }

  // Forms posted by script carry the CSRF token as a header too.
  window.flowbotCsrf = csrf;
})();
