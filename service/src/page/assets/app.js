// Shorty's web page: plain script, no framework, no build step. It talks
// only to the public JSON API (/api/v1/...) and keeps nothing but the API
// key, in this browser's localStorage. Every text from the server goes in
// through textContent, never innerHTML.
"use strict";
(function () {
  var KEY = "shorty.key", PAGE = 20, HOUR = 3600e3, DAY = 864e5;
  var $ = function (id) { return document.getElementById(id); };
  var cursor = null;

  function key() { try { return localStorage.getItem(KEY) || ""; } catch (e) { return ""; } }

  // One API call: JSON in and out, the key as a bearer token, problems
  // (application/problem+json) turned into an Error carrying the status.
  function api(method, path, body) {
    var headers = { Accept: "application/json" };
    if (key()) headers.Authorization = "Bearer " + key();
    if (body !== undefined) headers["Content-Type"] = "application/json";
    return fetch(path, { method: method, headers: headers, credentials: "omit",
      body: body === undefined ? undefined : JSON.stringify(body) })
      .then(function (r) {
        return r.text().then(function (t) {
          var data = null;
          try { data = t ? JSON.parse(t) : null; } catch (e) { data = null; }
          if (!r.ok) {
            var err = new Error((data && (data.detail || data.title)) || (r.status + " " + r.statusText));
            err.status = r.status;
            throw err;
          }
          return data;
        });
      });
  }

  function show(el, on) { el.hidden = !on; }
  function text(el, t) { el.textContent = t == null ? "" : String(t); return el; }
  function make(tag, t, cls) { var e = document.createElement(tag); if (t != null) text(e, t); if (cls) e.className = cls; return e; }
  function when(ms) { return ms == null ? "never" : new Date(ms).toLocaleString(); }
  function enc(code) { return encodeURIComponent(code); }
  function iso(ms) { return new Date(ms).toISOString(); }
  function clicks(l) { return (l.clicks && l.clicks.total) || 0; }

  function fail(err) {
    show($("auth-help"), err.status === 401);
    text($("error"), err.status === 401 ? "A valid API key is needed." : err.message);
    show($("error"), true);
  }
  function ok() { show($("error"), false); show($("auth-help"), false); }

  function shorten(ev) {
    ev.preventDefault();
    ok();
    var body = { url: $("url").value.trim() };
    var alias = $("alias").value.trim();
    if (alias) body.slug = alias;
    if ($("expires").value) {
      var at = new Date($("expires").value).getTime();
      if (!isNaN(at)) body.expiresAt = iso(at);
    }
    $("shorten-button").disabled = true;
    api("POST", "/api/v1/links", body).then(function (link) {
      text($("copied"), "");
      $("short-url").value = link.shortUrl;
      var qr = "/api/v1/links/" + enc(link.code) + "/qr.svg";
      $("qr").src = qr;
      $("qr-png").href = qr + "?format=png";
      $("result-details").href = "#/links/" + enc(link.code);
      show($("result"), true);
      $("short-url").focus();
      $("short-url").select();
      cursor = null;
      list(false);
    }, fail).then(function () { $("shorten-button").disabled = false; });
  }

  function copy() {
    var input = $("short-url");
    var done = function () { text($("copied"), "Copied."); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(done, function () { text($("copied"), "Select the link and copy it."); });
    } else {
      input.select();
      try { document.execCommand("copy"); done(); } catch (e) { text($("copied"), "Select the link and copy it."); }
    }
  }

  // "My links", newest first, a page at a time.
  function list(more) {
    if (!more) cursor = null;
    var q = "/api/v1/links?limit=" + PAGE + (cursor ? "&cursor=" + encodeURIComponent(cursor) : "");
    api("GET", q).then(function (page) {
      var items = Array.isArray(page) ? page : (page && (page.items || page.links || page.data)) || [];
      cursor = page && !Array.isArray(page) ? (page.nextCursor || page.next_cursor || null) : null;
      var ul = $("links");
      if (!more) ul.textContent = "";
      items.forEach(function (l) {
        var li = make("li"), a = make("a", l.shortUrl || l.code);
        a.href = "#/links/" + enc(l.code);
        li.appendChild(a);
        li.appendChild(make("span", l.url + " · " + clicks(l) + " clicks" + (l.disabled ? " · disabled" : ""), "n"));
        ul.appendChild(li);
      });
      text($("mine-empty"), "No links yet.");
      show($("mine-empty"), ul.children.length === 0);
      show($("more"), !!cursor);
    }, function (err) {
      // Said here, not in the form's alert: the form may still work.
      $("links").textContent = "";
      text($("mine-empty"), err.status === 401 ? "Save an API key to see your links." :
        "Your links could not be loaded: " + err.message);
      show($("mine-empty"), true);
      show($("more"), false);
    });
  }

  function status(l) {
    if (l.disabled) return "disabled";
    if (l.expiresAt != null && new Date(l.expiresAt).getTime() <= Date.now()) return "expired";
    if (l.maxClicks != null && clicks(l) >= l.maxClicks) return "click limit reached";
    return "active";
  }

  // A link's page: its fields, two charts and its top referrers.
  function detail(code) {
    show($("detail"), true);
    show($("shorten"), false);
    show($("mine"), false);
    api("GET", "/api/v1/links/" + enc(code)).then(function (l) {
      text($("d-code"), l.code);
      var a = text($("d-short"), l.shortUrl);
      a.href = l.shortUrl;
      text($("d-url"), l.url);
      text($("d-created"), when(l.createdAt));
      text($("d-expires"), when(l.expiresAt) + (l.maxClicks != null ? " (or after " + l.maxClicks + " clicks)" : ""));
      text($("d-status"), status(l));
      var c = l.clicks || {};
      text($("d-clicks"), l.clicksError ? "unavailable (" + l.clicksError + ")" :
        (c.total || 0) + " (" + (c.human || 0) + " people, " + (c.bot || 0) + " bots)" +
        (l.lastClickAt ? ", last " + when(l.lastClickAt) : ""));
    }, fail);
    var now = Date.now();
    chart(code, "hour", HOUR, 48, now);
    chart(code, "day", DAY, 30, now);
  }

  function chart(code, granularity, step, n, now) {
    var to = Math.floor(now / step) * step + step, from = to - n * step;
    // The API takes RFC 3339 times.
    var q = "/api/v1/links/" + enc(code) + "/stats?from=" + iso(from) + "&to=" + iso(to) + "&granularity=" + granularity;
    api("GET", q).then(function (s) {
      var counts = [];
      for (var i = 0; i < n; i++) counts.push(0);
      (s && (s.series || s.buckets || s.points) || []).forEach(function (p) {
        var t = p.t != null ? p.t : p.time != null ? p.time : p.start != null ? p.start : p.ts;
        var i = Math.floor((new Date(t).getTime() - from) / step);
        var v = p.clicks != null ? p.clicks : p.count != null ? p.count : p.total != null ? p.total : (p.human || 0) + (p.bot || 0);
        if (i >= 0 && i < n) counts[i] += +v || 0;
      });
      draw($("chart-" + granularity), counts, from, step, granularity);
      if (granularity === "day") referrers(s && (s.referrers || s.topReferrers));
    }, function (err) { if (granularity === "day") fail(err); });
  }

  // Bars in an SVG of 480 x 120 units; each bar titled for screen readers
  // and tooltips.
  function draw(svg, counts, from, step, granularity) {
    var NS = "http://www.w3.org/2000/svg", W = 480, H = 100, max = Math.max.apply(null, counts.concat([1]));
    var total = counts.reduce(function (a, b) { return a + b; }, 0), w = W / counts.length;
    svg.textContent = "";
    svg.setAttribute("aria-label", total + " clicks per " + granularity + ", peak " + Math.max.apply(null, counts));
    svg.setAttribute("data-total", total);
    counts.forEach(function (c, i) {
      var r = document.createElementNS(NS, "rect"), h = c ? Math.max(2, c / max * (H - 10)) : 0;
      r.setAttribute("x", (i * w + 1).toFixed(1));
      r.setAttribute("y", (H - h).toFixed(1));
      r.setAttribute("width", Math.max(1, w - 2).toFixed(1));
      r.setAttribute("height", h.toFixed(1));
      var t = document.createElementNS(NS, "title");
      var at = new Date(from + i * step);
      t.textContent = (granularity === "hour" ? at.toLocaleString() : at.toLocaleDateString()) + ": " + c;
      r.appendChild(t);
      svg.appendChild(r);
    });
    [[0, "start"], [W, "end"]].forEach(function (p, j) {
      var t = document.createElementNS(NS, "text");
      t.setAttribute("x", p[0]); t.setAttribute("y", 115); t.setAttribute("text-anchor", p[1]);
      var at = new Date(from + (j ? counts.length - 1 : 0) * step);
      t.textContent = granularity === "hour" ? at.getHours() + ":00 " + at.toLocaleDateString() : at.toLocaleDateString();
      svg.appendChild(t);
    });
    var m = document.createElementNS(NS, "text");
    m.setAttribute("x", 2); m.setAttribute("y", 10);
    m.textContent = "max " + max;
    svg.appendChild(m);
  }

  function referrers(list) {
    var ol = $("d-referrers");
    ol.textContent = "";
    if (list && !Array.isArray(list)) list = Object.keys(list).map(function (k) { return { referrer: k, clicks: list[k] }; });
    (list || []).forEach(function (r) {
      ol.appendChild(make("li", (r.referrer || r.host || r.name || "(direct)") + ": " + (r.clicks != null ? r.clicks : r.count)));
    });
    if (!ol.children.length) ol.appendChild(make("li", "none yet"));
  }

  function route() {
    ok();
    var m = /^#\/links\/(.+)$/.exec(location.hash);
    // A malformed escape in the address bar (`#/links/%E0%A4%A`) is not a
    // link: fall back to the main view rather than throwing.
    var code = null;
    if (m) {
      try {
        code = decodeURIComponent(m[1]);
      } catch (e) {
        code = null;
      }
    }
    if (code) return detail(code);
    show($("detail"), false);
    show($("shorten"), true);
    show($("mine"), true);
    list(false);
  }

  document.addEventListener("DOMContentLoaded", function () {
    $("key").value = key();
    if (!key()) $("key-box").open = true;
    $("key-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      try { localStorage.setItem(KEY, $("key").value.trim()); } catch (e) { /* private mode: nothing kept */ }
      $("key-box").open = false;
      ok();
      list(false);
    });
    $("key-forget").addEventListener("click", function () {
      try { localStorage.removeItem(KEY); } catch (e) { /* nothing kept */ }
      $("key").value = "";
      list(false);
    });
    $("shorten-form").addEventListener("submit", shorten);
    $("copy").addEventListener("click", copy);
    $("more").addEventListener("click", function () { list(true); });
    window.addEventListener("hashchange", route);
    route();
  });
})();
