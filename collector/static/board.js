// The live board: swap the server-rendered sections in place on every SSE "board" event,
// count durations up each second, and say when the feed is stale or reconnecting.
// EventSource reconnects by itself and sends Last-Event-ID; the server then sends the whole
// board again if it restarted (its event ids carry a boot id).
(function () {
  "use strict";
  var offset = 0; // server clock minus this browser's clock, ms
  var lastHeard = Date.now();
  var STALE_AFTER = 16000; // three missed ticks

  function span(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    var d = Math.floor(s / 86400); s -= d * 86400;
    var h = Math.floor(s / 3600); s -= h * 3600;
    var m = Math.floor(s / 60); s -= m * 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + (m < 10 ? "0" : "") + m + "m";
    return m + "m " + (s < 10 ? "0" : "") + s + "s";
  }

  function tick() {
    var now = Date.now() + offset;
    var els = document.querySelectorAll("[data-since]");
    for (var i = 0; i < els.length; i++) {
      var t = Date.parse(els[i].getAttribute("data-since"));
      if (!isNaN(t)) els[i].textContent = span((now - t) / 1000);
    }
    var clock = document.getElementById("clock");
    if (clock) clock.textContent = new Date(now).toLocaleTimeString("en-GB", { timeZone: "Europe/London" });
  }

  function setConn(state, text) {
    var el = document.getElementById("conn");
    if (!el) return;
    el.className = "conn conn-" + state;
    el.setAttribute("data-conn", state);
    el.querySelector(".conn-t").textContent = text;
    document.body.classList.toggle("stale", state === "stale");
  }

  function heard(now) {
    lastHeard = Date.now();
    if (now) offset = Date.parse(now) - Date.now();
    setConn("live", "Live");
  }

  setInterval(function () {
    tick();
    var board = document.getElementById("board");
    if (board && Date.now() - lastHeard > STALE_AFTER) {
      var since = new Date(lastHeard + offset).toLocaleTimeString("en-GB", { timeZone: "Europe/London" });
      setConn("stale", "Stale: no update since " + since);
    }
  }, 1000);
  tick();

  var board = document.getElementById("board");
  if (!board || !window.EventSource) return;
  var source = new EventSource(board.getAttribute("data-events"));
  source.addEventListener("board", function (e) {
    var data = JSON.parse(e.data);
    for (var name in data.sections) {
      var el = document.getElementById("sec-" + name);
      if (el) el.innerHTML = data.sections[name];
    }
    document.title = data.title;
    board.setAttribute("data-event-id", e.lastEventId);
    heard(data.now);
    tick();
  });
  source.addEventListener("tick", function (e) { heard(JSON.parse(e.data).now); });
  source.addEventListener("open", function () { heard(null); });
  source.addEventListener("error", function () {
    if (Date.now() - lastHeard <= STALE_AFTER) setConn("reconnecting", "Reconnecting…");
  });
})();
