// The live board: swap the server-rendered sections in place on every SSE "board" event,
// count durations up each second, and say when the feed is stale or reconnecting.
// EventSource reconnects by itself and sends Last-Event-ID; the server then sends the whole
// board again if it restarted (its event ids carry a boot id). The server ends each stream
// after a while (a "bye" event first): that reconnection is no news. A stream refused (the
// collector's stream caps: 503 or 429) is one the browser gives up on: we open a new one
// later, waiting longer each time. Nothing here sets a style attribute's text (the
// Content-Security-Policy refuses inline styles); custom properties go through the CSSOM.
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

  // A check's history bars: the share of each bar's time that was up.
  var bars = document.querySelectorAll("[data-uptime]");
  for (var i = 0; i < bars.length; i++) {
    bars[i].style.setProperty("--uptime", bars[i].getAttribute("data-uptime"));
  }

  var board = document.getElementById("board");
  if (!board || !window.EventSource) return;
  var leaving = false; // the server said "bye": the reconnection that follows is planned
  var backoff = 0; // ms before opening a new stream after one was refused

  function connect() {
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
    source.addEventListener("bye", function (e) { leaving = true; heard(JSON.parse(e.data).now); });
    source.addEventListener("open", function () { leaving = false; backoff = 0; heard(null); });
    source.addEventListener("error", function () {
      if (leaving) leaving = false; // the end the server announced; a failure after it is news
      else if (Date.now() - lastHeard <= STALE_AFTER) setConn("reconnecting", "Reconnecting…");
      if (source.readyState === EventSource.CLOSED) {
        // Refused: the browser will not try again by itself. Wait 5 s, then longer each
        // time up to a minute, at a random point so pages refused together spread out.
        backoff = Math.min(backoff ? backoff * 2 : 5000, 60000);
        setTimeout(connect, backoff / 2 + Math.random() * backoff / 2);
      }
    });
  }
  connect();
})();
