// Shared by the pages: API calls (session, CSRF, 401/403), Asia/Shanghai time formatting,
// labels in Chinese, a tiny DOM builder and the page header. Plain ES module, no build step.

// ---------------------------------------------------------------- API -----------------

export class HttpError extends Error {
  constructor(status, message, body) {
    super(message);
    this.name = "HttpError";
    this.status = status;
    this.body = body;
  }
}

/** Thrown (and never shown) while the browser is leaving for the sign-in page. */
export class SignedOut extends Error {}

let csrfToken = "";

export function signinUrl() {
  const next = location.pathname + location.search;
  return "/signin?next=" + encodeURIComponent(next);
}

async function request(method, path, body) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (method !== "GET") {
    headers["X-CSRF-Token"] = csrfToken;
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
  }
  const resp = await fetch(path, init);
  if (resp.status === 401) {
    location.assign(signinUrl());
    throw new SignedOut("401");
  }
  let data = null;
  const text = await resp.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!resp.ok) {
    const msg =
      resp.status === 403
        ? "无权限"
        : (data && typeof data.error === "string" && data.error) || `请求失败（HTTP ${resp.status}）`;
    throw new HttpError(resp.status, msg, data);
  }
  return data;
}

export const api = {
  get: (path) => request("GET", path),
  post: (path, body) => request("POST", path, body),
};

/** GET /api/session; remembers the CSRF token every POST sends. */
export async function loadSession() {
  const session = await api.get("/api/session");
  csrfToken = (session && session.csrf_token) || "";
  return session;
}

// ---------------------------------------------------------------- time ----------------

// Asia/Shanghai has kept UTC+8 without daylight saving since 1991, so a fixed offset gives
// the local wall-clock time without relying on the browser's time-zone data.
const SHANGHAI_OFFSET_MS = 8 * 3600 * 1000;
const HAS_ZONE = /(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$/;

/** A Date from an ISO 8601 string; one without a zone ("2026-11-26 03:12:00") is UTC. */
export function parseTime(value) {
  if (value === null || value === undefined || value === "") return null;
  if (value instanceof Date) return value;
  let s = String(value).trim().replace(" ", "T");
  s = s.replace(/(\.\d{3})\d+/, "$1"); // microseconds: keep milliseconds
  if (!HAS_ZONE.test(s)) s += "Z";
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? null : d;
}

function shanghaiParts(value) {
  const d = parseTime(value);
  if (!d) return null;
  const t = new Date(d.getTime() + SHANGHAI_OFFSET_MS);
  const p2 = (n) => String(n).padStart(2, "0");
  return {
    y: t.getUTCFullYear(),
    mo: p2(t.getUTCMonth() + 1),
    d: p2(t.getUTCDate()),
    h: p2(t.getUTCHours()),
    mi: p2(t.getUTCMinutes()),
    s: p2(t.getUTCSeconds()),
  };
}

/** "11:12" or "11:12:05" (Beijing time). */
export function fmtTime(value, seconds = false) {
  const p = shanghaiParts(value);
  if (!p) return "—";
  return seconds ? `${p.h}:${p.mi}:${p.s}` : `${p.h}:${p.mi}`;
}

/** "11-26 11:12" (Beijing time). */
export function fmtDateTime(value) {
  const p = shanghaiParts(value);
  return p ? `${p.mo}-${p.d} ${p.h}:${p.mi}` : "—";
}

/** "2026-11-26 11:12:05" (Beijing time), for tooltips. */
export function fmtFull(value) {
  const p = shanghaiParts(value);
  return p ? `${p.y}-${p.mo}-${p.d} ${p.h}:${p.mi}:${p.s}（北京时间）` : "—";
}

/** "2026-11-26" (Beijing calendar day). */
export function fmtDate(value) {
  const p = shanghaiParts(value);
  return p ? `${p.y}-${p.mo}-${p.d}` : "—";
}

/** Time of day when the moment is today (Beijing), else date and time. */
export function fmtWhen(value, now = new Date(), seconds = true) {
  const p = shanghaiParts(value);
  const n = shanghaiParts(now);
  if (!p) return "—";
  if (p.y === n.y && p.mo === n.mo && p.d === n.d) return seconds ? `${p.h}:${p.mi}:${p.s}` : `${p.h}:${p.mi}`;
  return `${p.mo}-${p.d} ${p.h}:${p.mi}`;
}

/** Beijing calendar day of a moment, as "11-26". */
export function fmtDay(value) {
  const p = shanghaiParts(value);
  return p ? `${p.mo}-${p.d}` : "—";
}

export const SHANGHAI_OFFSET = SHANGHAI_OFFSET_MS;

// ---------------------------------------------------------------- numbers -------------

export function fmtInt(value) {
  if (value === null || value === undefined || value === "" || !Number.isFinite(Number(value))) return "—";
  return String(Math.round(Number(value)));
}

/** A ratio in [0, 1] as "95.8%"; null as "—". */
export function fmtPct(value, digits = 1) {
  if (value === null || value === undefined || value === "" || !Number.isFinite(Number(value))) return "—";
  return (Number(value) * 100).toFixed(digits) + "%";
}

// ---------------------------------------------------------------- labels --------------

export const URGENCY = { normal: "一般", urgent: "紧急", critical: "特急" };

// The server's channel labels (web/views.py CHANNEL_LABELS); the city API sends its own.
export const CHANNELS = {
  hotline_12345: "12345热线",
  app: "市民App",
  wechat: "微信",
  web: "网站",
  letter: "来信",
  grid_inspector: "网格员",
  camera: "视频监控",
  sensor: "传感器",
  hotline: "热线转办",
  other: "其他",
};

export const REASONS = {
  low_confidence: "置信度低",
  district_unknown: "区县未识别",
  street_unknown: "街道未识别",
  place_conflict: "地址矛盾",
  outside_city: "不在本市",
  no_model: "模型不可用",
};

export const ROLES = { dispatcher: "调度员", analyst: "分析员", admin: "管理员" };

export const label = (map, key) => (key && map[key]) || key || "—";

// ---------------------------------------------------------------- DOM -----------------

/** h("td", {class: "num", title: "…"}, "12") — text children only, never HTML. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);

/** Set text only when it changed (keeps selections and avoids needless layout). */
export function setText(el, text) {
  const s = String(text);
  if (el && el.textContent !== s) el.textContent = s;
}

/** A whole-page message in place of the page's content (e.g. 无权限). */
export function showPageMessage(text, detail = "", testid = "page-message") {
  const main = $("main");
  const box = h(
    "div",
    { class: "page-message", "data-testid": testid, role: "alert" },
    h("div", { class: "page-message-title" }, text),
    detail ? h("div", { class: "page-message-detail" }, detail) : null,
  );
  main.replaceChildren(box);
}

export function showForbidden() {
  showPageMessage("无权限", "当前账号无权查看此页面，请联系管理员开通权限。", "forbidden");
}

/** The thin bar under the header saying the data is stale; null text hides it. */
export function setStatusBar(text) {
  const bar = $("#status-bar");
  if (!bar) return;
  bar.hidden = !text;
  setText(bar, text || "");
}

// ---------------------------------------------------------------- header --------------

export function mountHeader(session) {
  const user = $("[data-testid=user-name]");
  if (user) {
    setText(user, session.user || "");
    user.title = `${label(ROLES, session.role)} · ${session.user}`;
  }
  const role = $("[data-testid=user-role]");
  if (role) setText(role, label(ROLES, session.role));
  const out = $("[data-testid=signout]");
  if (out && !out.dataset.bound) {
    out.dataset.bound = "1";
    out.addEventListener("click", async () => {
      out.disabled = true;
      try {
        await api.post("/signout");
      } catch (err) {
        if (err instanceof SignedOut) return;
      }
      location.assign("/signin");
    });
  }
  const clock = $("#clock");
  if (clock && !clock.dataset.bound) {
    clock.dataset.bound = "1";
    const tick = () => setText(clock, fmtTime(new Date(), true));
    tick();
    setInterval(tick, 1000);
  }
}

/** Sign-in page: the `next` field from the query, the error message when error=1. */
export function initSignin() {
  const params = new URLSearchParams(location.search);
  const next = params.get("next") || "";
  const safe = next.startsWith("/") && !next.startsWith("//") && !next.includes("\\") ? next : "/board";
  const field = $("#next");
  if (field) field.value = safe;
  const err = $("[data-testid=signin-error]");
  if (err) err.hidden = params.get("error") !== "1";
  const user = $("#username");
  if (user && !user.value) user.focus();
}

if (document.body && document.body.dataset.page === "signin") initSignin();

/** Start a page: who is signed in goes into the header, then ``start`` runs. Signed out:
 * the sign-in page (loadSession redirects); no permission: said on the page; anything
 * else: retried, since the worker may be restarting. */
export async function startPage(start, retryMs = 5000) {
  try {
    mountHeader(await loadSession());
  } catch (err) {
    if (err instanceof SignedOut) return;
    if (err instanceof HttpError && err.status === 403) {
      showForbidden();
      return;
    }
    setStatusBar(`无法获取登录信息（${err.message || "网络错误"}），正在重试…`);
    setTimeout(() => startPage(start, retryMs), retryMs);
    return;
  }
  start();
}
