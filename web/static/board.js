// 派单看板: the dispatcher's board. Polls GET /api/board every 2 s and updates the page in
// place (items keyed by input_id), so an open select, a half-made correction and the scroll
// position survive each refresh. Verdicts go to POST /api/feedback. Each report's similar
// past cases are fetched from GET /api/similar when its 相似案例 toggle is first opened.

import {
  $,
  api,
  CHANNELS,
  fmtDate,
  fmtFull,
  fmtInt,
  fmtPct,
  fmtTime,
  fmtWhen,
  h,
  HttpError,
  label,
  REASONS,
  setStatusBar,
  setText,
  showForbidden,
  SignedOut,
  startPage,
  URGENCY,
} from "./common.js";

const REFRESH_MS = 2000;
const RETRY_MS = 5000;
// A handled item stays on screen, greyed, this long after it leaves the server's queue.
const LINGER_MS = 5000;
// Still in the server's queue this long after a 202: offer the buttons again.
const STUCK_MS = 60000;
const SOON_MINUTES = 30;

// Qingdao's districts and county-level cities: the "all units" list is grouped by them.
const DISTRICTS = ["市南区", "市北区", "李沧区", "崂山区", "黄岛区", "城阳区", "即墨区", "胶州市", "平度市", "莱西市"];
const CITY_GROUP = "市级及其他";

const state = {
  units: [],
  unitSet: new Set(),
  unitsKey: "",
  entries: new Map(), // input_id -> entry (see createEntry)
  recentKey: "",
  recentSimilar: new Map(), // input_id -> similar-cases toggle of a recent decision's row
  handledKey: "",
  lastOk: null,
  stopped: false,
};

const queueEl = $("[data-testid=review-queue]");

// ---------------------------------------------------------------- similar cases -------

const SIMILAR_K = 5;
const VERDICTS = { confirmed: "确认", corrected: "改派" };
let similarSeq = 0;

/** A report's 相似案例 toggle (a button) and the panel it opens. The list is fetched on
 * first opening, then kept; a failed or empty fetch is tried again on the next opening. */
function createSimilar(inputId, compact = false) {
  const panelId = `similar-${++similarSeq}`;
  const sim = {
    inputId,
    state: "idle", // idle | loading | loaded
    button: h(
      "button",
      {
        type: "button",
        class: "sim-toggle",
        "data-testid": "similar-toggle",
        "aria-expanded": "false",
        "aria-controls": panelId,
        title: "Similar past cases: same type, same district, the year before",
        "aria-label": compact ? "相似案例" : null,
      },
      compact ? "相似" : "相似案例",
    ),
    panel: h("div", { class: "sim", id: panelId, "data-testid": "similar-cases", role: "region", "aria-label": "相似历史案例", hidden: true }),
  };
  sim.button.addEventListener("click", () => toggleSimilar(sim));
  return sim;
}

function toggleSimilar(sim) {
  const open = sim.panel.hidden;
  sim.panel.hidden = !open;
  sim.button.setAttribute("aria-expanded", String(open));
  if (open && sim.state === "idle") loadSimilar(sim);
}

function similarNote(sim, text, kind, retry = false) {
  sim.panel.dataset.state = kind;
  const note = h("div", { class: `sim-note sim-${kind}`, role: kind === "error" ? "alert" : null }, text);
  if (retry) {
    note.append(
      " ",
      h("button", { type: "button", class: "sim-retry", onclick: () => loadSimilar(sim) }, "重试"),
    );
  }
  sim.panel.replaceChildren(note);
}

async function loadSimilar(sim) {
  if (sim.state === "loading") return;
  sim.state = "loading";
  sim.panel.setAttribute("aria-busy", "true");
  similarNote(sim, "正在查找相似案例…", "loading");
  try {
    const params = new URLSearchParams({ input_id: sim.inputId, k: String(SIMILAR_K) });
    const data = await api.get(`/api/similar?${params}`);
    const cases = (data && Array.isArray(data.cases)) ? data.cases : [];
    if (cases.length) {
      renderSimilar(sim, cases);
      sim.state = "loaded";
    } else {
      similarNote(sim, "近一年同区同类事件中暂无相似案例", "empty");
      sim.state = "idle";
    }
  } catch (err) {
    sim.state = "idle";
    if (err instanceof SignedOut) return;
    if (err instanceof HttpError && err.status === 404) {
      similarNote(sim, "该报告尚未入库相似检索，请稍后再试", "missing", true);
    } else {
      const why = err instanceof HttpError ? err.message : "网络错误";
      similarNote(sim, `相似案例加载失败（${why}）`, "error", true);
    }
  } finally {
    sim.panel.removeAttribute("aria-busy");
  }
}

function hoursText(hours) {
  return hours === null || hours === undefined || !Number.isFinite(Number(hours))
    ? "—"
    : `${Number(hours).toFixed(1)} 小时`;
}

function renderSimilar(sim, cases) {
  sim.panel.dataset.state = "loaded";
  const rows = cases.map((c) => {
    const verdict = VERDICTS[c.verdict];
    return h(
      "tr",
      {
        "data-testid": "similar-case",
        "data-case-id": c.case_id,
        "data-input-id": c.input_id,
        title: [c.input_id, c.text].filter(Boolean).join("\n"),
      },
      h("td", { class: "num sim-score", title: "相似度（余弦）" }, Number.isFinite(Number(c.score)) ? Number(c.score).toFixed(2) : "—"),
      h(
        "td",
        { class: "sim-event" },
        h("span", { class: "code" }, c.code || ""),
        " ",
        c.event_name || "",
        c.text ? h("span", { class: "sim-text" }, c.text) : null,
      ),
      h("td", { class: "sim-place" + (c.district ? "" : " missing") }, c.district || "—"),
      h(
        "td",
        { class: "sim-unit" + (c.unit ? "" : " missing"), title: verdict ? `${verdict}：${c.unit}` : "未收到反馈，显示派单单位" },
        c.unit || "—",
      ),
      h("td", { class: "num sim-hours", title: "从报告到最终反馈" }, hoursText(c.hours_to_verdict)),
      h("td", { class: "mono sim-date", title: fmtFull(c.reported_at) }, fmtDate(c.reported_at)),
    );
  });
  sim.panel.replaceChildren(
    h(
      "table",
      { class: "sim-table" },
      h("caption", { class: "sim-caption" }, `相似历史案例（近一年同区同类，前 ${cases.length} 条）`),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { class: "num", scope: "col" }, "相似度"),
          h("th", { scope: "col" }, "事件"),
          h("th", { scope: "col" }, "区域"),
          h("th", { scope: "col" }, "处置单位"),
          h("th", { class: "num", scope: "col" }, "处置用时"),
          h("th", { scope: "col" }, "日期"),
        ),
      ),
      h("tbody", {}, rows),
    ),
  );
}

// ---------------------------------------------------------------- review items --------

function dueText(item) {
  const left = Number(item.minutes_left);
  if (item.overdue) return `超时 ${Math.max(1, Math.floor(-left))} 分钟`;
  if (!Number.isFinite(left)) return "";
  if (left < 1) return "即将超时";
  if (left < 60) return `剩余 ${Math.floor(left)} 分钟`;
  const hours = Math.floor(left / 60);
  const mins = Math.floor(left % 60);
  return mins ? `剩余 ${hours} 小时 ${mins} 分` : `剩余 ${hours} 小时`;
}

function unitGroup(unit) {
  return DISTRICTS.find((d) => unit.startsWith(d)) || CITY_GROUP;
}

/** The select's options: valid alternatives first, then every unit, grouped by district. */
function buildOptions(select, item) {
  const previous = select.value;
  const listed = new Set();
  const frag = document.createDocumentFragment();
  const alts = (item.alternatives || []).filter(
    (a) => a && a.unit && (state.unitSet.size === 0 || state.unitSet.has(a.unit)) && !listed.has(a.unit) && listed.add(a.unit),
  );
  frag.append(h("option", { value: "", disabled: true }, "— 选择改派单位 —"));
  if (alts.length) {
    const g = h("optgroup", { label: "候选单位" });
    for (const a of alts) {
      const extra = [a.code, fmtPct(a.confidence, 0)].filter(Boolean).join(" · ");
      g.append(h("option", { value: a.unit, dataset: { code: a.code || "" } }, `${a.unit}（${extra}）`));
    }
    frag.append(g);
  }
  const groups = new Map();
  const own = item.district && DISTRICTS.includes(item.district) ? item.district : null;
  if (own) groups.set(own, []);
  for (const d of DISTRICTS) if (!groups.has(d)) groups.set(d, []);
  groups.set(CITY_GROUP, []);
  for (const u of state.units) {
    if (listed.has(u)) continue;
    listed.add(u);
    groups.get(unitGroup(u)).push(u);
  }
  for (const [name, units] of groups) {
    if (!units.length) continue;
    const g = h("optgroup", { label: name === own ? `${name}（本区）` : name });
    for (const u of units) g.append(h("option", { value: u }, u));
    frag.append(g);
  }
  select.replaceChildren(frag);
  if (previous && listed.has(previous)) select.value = previous;
  else select.value = alts.length ? alts[0].unit : "";
}

function createEntry(item) {
  const refs = {};
  refs.due = h("span", { class: "due" });
  refs.urgency = h("span", { class: "urg" });
  refs.code = h("span", { class: "code" });
  refs.event = h("span", { class: "event" });
  refs.meta = h("span", { class: "meta" });
  refs.id = h("span", { class: "rid", title: "input_id" });
  refs.text = h("p", { class: "ri-text" });
  refs.place = h("span", { class: "place" });
  refs.unit = h("span", { class: "prop-unit" });
  refs.conf = h("span", { class: "conf" });
  refs.reasons = h("span", { class: "reasons" });
  refs.confirm = h("button", { type: "button", class: "btn btn-confirm", "data-testid": "confirm", title: "Confirm the proposed unit" }, "确认派往");
  refs.select = h("select", { class: "unit-select", "data-testid": "correct-unit", "aria-label": "改派单位" });
  refs.correct = h("button", { type: "button", class: "btn btn-correct", "data-testid": "correct", title: "Send to the chosen unit" }, "改派");
  refs.status = h("span", { class: "status", "data-testid": "status" }, "待审核");
  refs.error = h("span", { class: "ri-error", role: "alert" });
  const similar = createSimilar(item.input_id);
  // A camera's report: its blurred snapshot (faces, heads, plates obscured) as evidence.
  refs.snapshot = h("a", { class: "snap", target: "_blank", rel: "noopener", "data-testid": "snapshot", title: "The camera frame that raised this event (blurred)", hidden: true }, "现场快照");

  const el = h(
    "article",
    { class: "ri", "data-testid": "review-item", "data-input-id": item.input_id },
    h(
      "div",
      { class: "ri-main" },
      h("div", { class: "ri-head" }, refs.due, refs.urgency, refs.code, refs.event, refs.meta),
      refs.text,
      h(
        "div",
        { class: "ri-foot" },
        refs.place,
        h("span", { class: "prop" }, h("span", { class: "prop-label" }, "建议派往"), refs.unit),
        refs.conf,
        refs.reasons,
        refs.snapshot,
        similar.button,
      ),
    ),
    h(
      "div",
      { class: "ri-act" },
      refs.confirm,
      h("div", { class: "correct-row" }, refs.select, refs.correct),
      h("div", { class: "ri-state" }, refs.status, refs.error, refs.id),
    ),
    similar.panel,
  );
  const entry = {
    id: item.input_id,
    el,
    refs,
    data: item,
    optionsKey: "",
    touched: false,
    pending: false,
    done: null, // {verdict, at} after a 202 from this page
    goneAt: null, // when it left the server's queue
    lingerTimer: null,
    similar,
  };
  refs.confirm.addEventListener("click", () => send(entry, "confirmed"));
  refs.correct.addEventListener("click", () => send(entry, "corrected"));
  refs.select.addEventListener("change", () => {
    entry.touched = true;
    syncControls(entry);
  });
  refs.select.addEventListener("pointerdown", () => (entry.touched = true));
  refs.select.addEventListener("keydown", () => (entry.touched = true));
  return entry;
}

function syncControls(entry) {
  const { refs, data } = entry;
  const locked = entry.pending || !!entry.done || entry.goneAt !== null;
  refs.confirm.disabled = locked || !data.unit;
  refs.confirm.title = data.unit ? "Confirm the proposed unit" : "No proposed unit: choose one and use 改派";
  refs.select.disabled = locked;
  refs.correct.disabled = locked || !refs.select.value;
}

function setStatus(entry, text, kind) {
  setText(entry.refs.status, text);
  entry.refs.status.dataset.kind = kind;
}

function updateEntry(entry, item, now) {
  entry.data = item;
  const { el, refs } = entry;
  const left = Number(item.minutes_left);
  el.classList.toggle("overdue", !!item.overdue);
  el.classList.toggle("soon", !item.overdue && Number.isFinite(left) && left <= SOON_MINUTES);
  el.dataset.urgency = item.urgency || "";
  setText(refs.due, dueText(item));
  refs.due.title = `响应时限 ${fmtFull(item.respond_by)}`;
  setText(refs.urgency, label(URGENCY, item.urgency));
  refs.urgency.className = `urg urg-${item.urgency || "normal"}`;
  setText(refs.code, item.code || "");
  setText(refs.event, item.event_name || "");
  setText(refs.meta, `${label(CHANNELS, item.channel)} · ${fmtWhen(item.received_at, now, false)} 收件 · 时限 ${fmtWhen(item.respond_by, now, false)}`);
  refs.meta.title = `收件 ${fmtFull(item.received_at)}\n时限 ${fmtFull(item.respond_by)}`;
  setText(refs.id, item.input_id);
  refs.snapshot.hidden = item.channel !== "camera";
  if (item.channel === "camera") refs.snapshot.href = `/api/snapshot?${new URLSearchParams({ input_id: item.input_id })}`;
  setText(refs.text, item.text || "（无文本）");
  refs.text.title = item.text || "";
  setText(refs.place, [item.district, item.street].filter(Boolean).join(" · ") || "地点未识别");
  refs.place.classList.toggle("missing", !item.district);
  setText(refs.unit, item.unit || "未确定，请选择单位改派");
  refs.unit.classList.toggle("missing", !item.unit);
  setText(refs.conf, `置信度 ${fmtPct(item.confidence, 0)}`);
  refs.conf.classList.toggle("low", Number(item.confidence) < 0.5);
  const reasons = (item.review_reasons || []).map((r) => label(REASONS, r));
  const reasonsKey = reasons.join("|");
  if (refs.reasons.dataset.key !== reasonsKey) {
    refs.reasons.dataset.key = reasonsKey;
    refs.reasons.replaceChildren(...reasons.map((r) => h("span", { class: "chip" }, r)));
  }
  const key = state.unitsKey + "#" + (item.district || "") + "#" + JSON.stringify((item.alternatives || []).map((a) => [a.unit, a.code, a.confidence]));
  if (key !== entry.optionsKey && !entry.touched && document.activeElement !== refs.select) {
    entry.optionsKey = key;
    buildOptions(refs.select, item);
  }
  if (entry.done && !entry.goneAt && Date.now() - entry.done.at > STUCK_MS) {
    // The verdict was accepted but the report is still queued: let the dispatcher retry.
    entry.done = null;
    el.classList.remove("done");
    setStatus(entry, "待审核", "waiting");
    setText(refs.error, "反馈已提交，但队列尚未更新；如有需要请重试");
  }
  syncControls(entry);
}

async function send(entry, verdict) {
  if (entry.pending || entry.done) return;
  const item = entry.data;
  const unit = verdict === "confirmed" ? item.unit : entry.refs.select.value;
  if (!unit) return;
  let code = item.code;
  if (verdict === "corrected") {
    const alt = (item.alternatives || []).find((a) => a.unit === unit);
    if (alt && alt.code) code = alt.code;
  }
  const body = { input_id: item.input_id, verdict, unit };
  if (code) body.code = code;
  entry.pending = true;
  setText(entry.refs.error, "");
  setStatus(entry, "提交中…", "pending");
  syncControls(entry);
  try {
    await api.post("/api/feedback", body);
    entry.done = { verdict, unit, at: Date.now() };
    entry.el.classList.add("done");
    setStatus(entry, verdict === "confirmed" ? "已确认" : "已改派", verdict);
    entry.el.title = verdict === "confirmed" ? `已确认派往 ${unit}` : `已改派至 ${unit}`;
  } catch (err) {
    if (err instanceof SignedOut) return;
    setStatus(entry, "待审核", "waiting");
    setText(entry.refs.error, err instanceof HttpError ? err.message : "网络错误，请重试");
  } finally {
    entry.pending = false;
    syncControls(entry);
  }
}

function dropIfGone(entry) {
  if (entry.goneAt === null || state.entries.get(entry.id) !== entry) return;
  clearTimeout(entry.lingerTimer);
  entry.el.remove();
  state.entries.delete(entry.id);
  $("#queue-empty").hidden = state.entries.size > 0;
}

function renderQueue(queue, handled, now) {
  const serverIds = new Set(queue.map((it) => it.input_id));
  const handledById = new Map(handled.map((r) => [r.input_id, r]));
  const t = Date.now();

  // Items that left the server's queue: grey them, then drop them after LINGER_MS.
  for (const [id, entry] of state.entries) {
    if (serverIds.has(id)) continue;
    if (entry.goneAt === null) {
      entry.goneAt = t;
      clearTimeout(entry.lingerTimer);
      entry.lingerTimer = setTimeout(() => dropIfGone(entry), LINGER_MS);
      entry.el.classList.add("done", "gone");
      if (!entry.done) {
        const r = handledById.get(id);
        if (r && r.verdict === "confirmed") setStatus(entry, "已确认", "confirmed");
        else if (r && r.verdict === "corrected") setStatus(entry, "已改派", "corrected");
        else setStatus(entry, "已处理", "gone");
        if (r && r.dispatcher_id) entry.el.title = `由 ${r.dispatcher_id} 处理`;
      }
      syncControls(entry);
    } else if (t - entry.goneAt >= LINGER_MS) {
      dropIfGone(entry);
    }
  }

  // Place the server's items in its order; lingering ones keep their place among them.
  let cursor = queueEl.firstElementChild;
  for (const item of queue) {
    let entry = state.entries.get(item.input_id);
    if (!entry) {
      entry = createEntry(item);
      state.entries.set(item.input_id, entry);
    } else if (entry.goneAt !== null) {
      // Back in the queue (e.g. the verdict was not applied): live again.
      entry.goneAt = null;
      clearTimeout(entry.lingerTimer);
      entry.el.classList.remove("gone");
      if (!entry.done) {
        entry.el.classList.remove("done");
        setStatus(entry, "待审核", "waiting");
      }
    }
    updateEntry(entry, item, now);
    while (cursor && cursor !== entry.el && !serverIds.has(cursor.dataset.inputId)) {
      cursor = cursor.nextElementSibling;
    }
    if (cursor === entry.el) cursor = cursor.nextElementSibling;
    else queueEl.insertBefore(entry.el, cursor);
  }
  $("#queue-empty").hidden = state.entries.size > 0;
}

// ---------------------------------------------------------------- tables --------------

function renderRecent(rows, now) {
  const key = JSON.stringify(rows);
  if (key === state.recentKey) return;
  state.recentKey = key;
  const body = $("[data-testid=recent-decisions] tbody");
  const focused = document.activeElement;
  const similar = new Map();
  for (const r of rows) {
    if (!r.input_id || similar.has(r.input_id)) continue;
    similar.set(r.input_id, state.recentSimilar.get(r.input_id) || createSimilar(r.input_id, true));
  }
  state.recentSimilar = similar; // toggles of rows gone from the list are dropped
  const placed = new Set(); // a toggle sits in one row only
  body.replaceChildren(
    ...rows.flatMap((r) => {
      const sim = placed.has(r.input_id) ? null : similar.get(r.input_id);
      if (sim) placed.add(r.input_id);
      return [
        h(
          "tr",
          {
            "data-testid": "decision-row",
            "data-input-id": r.input_id,
            class: r.auto ? "" : "row-review",
            title: `${r.input_id} · ${label(CHANNELS, r.channel)} · ${[r.district, r.street].filter(Boolean).join(" ") || "地点未识别"}\n${r.text || ""}`,
          },
          h("td", { class: "col-time mono", title: fmtFull(r.decided_at) }, fmtWhen(r.decided_at, now)),
          h(
            "td",
            { class: "ellipsis" },
            h("span", { class: "code" }, r.code || ""),
            " ",
            r.event_name || "",
            r.urgency && r.urgency !== "normal" ? h("span", { class: `urg urg-${r.urgency} urg-sm` }, label(URGENCY, r.urgency)) : null,
          ),
          h("td", { class: "ellipsis col-area" }, [r.district, r.street].filter(Boolean).join(" · ") || "—"),
          h("td", { class: "ellipsis" + (r.unit ? "" : " missing") }, r.unit || "待定"),
          h("td", { class: "num" }, fmtPct(r.confidence, 0)),
          h("td", { class: "col-mode" }, h("span", { class: r.auto ? "mode mode-auto" : "mode mode-review" }, r.auto ? "自动" : "转人工")),
          h("td", { class: "col-sim" }, sim ? sim.button : null),
        ),
        sim ? h("tr", { class: "sim-row" }, h("td", { colspan: 7 }, sim.panel)) : null,
      ];
    }).filter(Boolean),
  );
  // Rebuilding the rows moved the toggles: keep the keyboard where it was.
  if (focused && focused !== document.activeElement && body.contains(focused)) focused.focus({ preventScroll: true });
  if (!rows.length) body.append(h("tr", { class: "empty-row" }, h("td", { colspan: 7 }, "暂无派单")));
}

function renderHandled(rows, now) {
  const key = JSON.stringify(rows);
  if (key === state.handledKey) return;
  state.handledKey = key;
  const body = $("[data-testid=recently-handled] tbody");
  body.replaceChildren(
    ...rows.map((r) => {
      const corrected = r.verdict === "corrected";
      const unitCell = corrected
        ? h(
            "td",
            { class: "ellipsis", title: `${r.decided_unit || "（无建议单位）"} → ${r.unit}` },
            h("b", {}, r.unit || ""),
            r.decided_unit ? h("span", { class: "was" }, " 原 ", h("s", {}, r.decided_unit)) : null,
          )
        : h("td", { class: "ellipsis", title: r.unit || "" }, r.unit || "");
      return h(
        "tr",
        { "data-testid": "handled-row", "data-input-id": r.input_id },
        h("td", { class: "col-time mono", title: fmtFull(r.given_at) }, fmtWhen(r.given_at, now)),
        h("td", {}, h("span", { class: corrected ? "verdict verdict-corrected" : "verdict verdict-confirmed" }, corrected ? "改派" : "确认")),
        unitCell,
        h("td", { class: "ellipsis" }, r.dispatcher_id || ""),
        h("td", { class: "mono ellipsis small" }, r.input_id),
      );
    }),
  );
  if (!rows.length) body.append(h("tr", { class: "empty-row" }, h("td", { colspan: 5 }, "暂无人工审核记录")));
}

function renderCounts(c) {
  const n = (k) => Number(c[k] || 0);
  setText($("[data-testid=count-review-waiting]"), fmtInt(n("review_waiting")));
  setText($("[data-testid=count-review-overdue]"), fmtInt(n("review_overdue")));
  setText($("[data-testid=count-decisions-last-hour]"), fmtInt(n("decisions_last_hour")));
  setText($("[data-testid=count-auto-last-hour]"), fmtInt(n("auto_last_hour")));
  setText($("[data-testid=count-handled-last-hour]"), fmtInt(n("handled_last_hour")));
  $("#counter-overdue").classList.toggle("alert", n("review_overdue") > 0);
  const decisions = n("decisions_last_hour");
  setText($("#auto-share"), decisions ? `占 ${fmtPct(n("auto_last_hour") / decisions, 1)}` : "");
}

// ---------------------------------------------------------------- loop ----------------

function render(data) {
  const now = new Date();
  const units = Array.isArray(data.units) ? data.units : [];
  const unitsKey = JSON.stringify(units);
  if (unitsKey !== state.unitsKey) {
    state.units = units;
    state.unitSet = new Set(units);
    state.unitsKey = unitsKey;
  }
  const queue = Array.isArray(data.review_queue) ? data.review_queue : [];
  const handled = Array.isArray(data.recently_handled) ? data.recently_handled : [];
  const counts = data.counts || {};
  renderCounts(counts);
  renderQueue(queue, handled, now);
  renderRecent(Array.isArray(data.recent) ? data.recent : [], now);
  renderHandled(handled, now);
  const waiting = Number(counts.review_waiting ?? queue.length);
  const overdue = queue.filter((it) => it.overdue).length;
  setText(
    $("#queue-note"),
    (waiting > queue.length ? `显示 ${queue.length} / 共 ${waiting} 条` : `共 ${queue.length} 条`) + (overdue ? ` · 超时 ${overdue} 条` : ""),
  );
  setText($("#data-time"), fmtTime(data.now || now, true));
}

async function tick() {
  if (state.stopped) return;
  let delay = REFRESH_MS;
  try {
    const data = await api.get("/api/board");
    render(data);
    state.lastOk = new Date();
    setStatusBar(null);
    document.body.dataset.ready = "true";
  } catch (err) {
    if (err instanceof SignedOut) return;
    if (err instanceof HttpError && err.status === 403) {
      state.stopped = true;
      showForbidden();
      return;
    }
    delay = RETRY_MS;
    const since = state.lastOk ? `，数据停留在 ${fmtTime(state.lastOk, true)}` : "";
    setStatusBar(`数据更新失败（${err.message || "网络错误"}）${since}，正在重试…`);
    console.warn("board refresh failed", err);
  }
  setTimeout(tick, delay);
}
startPage(tick);
