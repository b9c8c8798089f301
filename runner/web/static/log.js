// Follows a running job's log: polls the page's JSON endpoint and appends new
// lines. Without JavaScript the page offers a plain refresh link instead.
(function () {
  "use strict";
  var log = document.getElementById("log");
  if (!log || !window.fetch || log.getAttribute("data-terminal") === "true") {
    return;
  }
  var url = log.getAttribute("data-log-url");
  var next = log.getAttribute("data-next") || "0";
  var interval = parseInt(log.getAttribute("data-interval-ms"), 10) || 1000;
  var status = document.getElementById("follow-status");
  var refresh = document.getElementById("log-refresh");
  var state = document.getElementById("job-state");
  var failures = 0;
  var marker = /\[REDACTED:[^\]\s]{1,160}\]/g;

  function say(text) {
    if (status) { status.textContent = text; }
  }

  function appendText(element, text) {
    var last = 0;
    var match;
    marker.lastIndex = 0;
    while ((match = marker.exec(text)) !== null) {
      element.appendChild(document.createTextNode(text.slice(last, match.index)));
      var span = document.createElement("span");
      span.className = "redacted";
      span.textContent = match[0];
      element.appendChild(span);
      last = match.index + match[0].length;
    }
    element.appendChild(document.createTextNode(text.slice(last)));
  }

  function append(lines) {
    if (!lines.length) { return; }
    var empty = document.getElementById("log-empty");
    if (empty) { empty.parentNode.removeChild(empty); }
    var atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    lines.forEach(function (item) {
      var div = document.createElement("div");
      div.className = "line " + item.kind;
      appendText(div, item.text);
      log.appendChild(div);
    });
    if (atBottom) { log.scrollTop = log.scrollHeight; }
  }

  function finished(data) {
    say("The job is " + data.state + ". Reload the page for its result.");
    if (refresh) {
      refresh.textContent = "Reload for the result";
      refresh.hidden = false;
    }
    var cancel = document.getElementById("cancel-job");
    if (cancel) { cancel.hidden = true; }
    log.setAttribute("data-terminal", "true");
  }

  function poll() {
    fetch(url + "?after=" + encodeURIComponent(next), {
      credentials: "same-origin",
      cache: "no-store",
      headers: { "Accept": "application/json" }
    }).then(function (response) {
      if (!response.ok) { throw new Error("HTTP " + response.status); }
      return response.json();
    }).then(function (data) {
      failures = 0;
      append(data.lines);
      next = String(data.next);
      log.setAttribute("data-next", next);
      if (state && state.textContent !== data.state) {
        state.textContent = data.state;
        state.className = "state state-" + data.state;
      }
      if (data.terminal) {
        finished(data);
        return;
      }
      window.setTimeout(poll, data.more ? 0 : interval);
    }).catch(function () {
      failures += 1;
      if (failures >= 5) {
        say("Live updates stopped.");
        if (refresh) { refresh.hidden = false; }
        return;
      }
      window.setTimeout(poll, interval * failures);
    });
  }

  say("Following the log live.");
  if (refresh) { refresh.hidden = true; }
  window.setTimeout(poll, interval);
}());
