// 城市态势: the analysts' city dashboard. Polls GET /api/city?hours=N every 15 s and draws
// the panels with the vendored Apache ECharts (window.echarts, /static/vendor/echarts.min.js).

import {
  $,
  api,
  CHANNELS,
  fmtDateTime,
  fmtDay,
  fmtFull,
  fmtInt,
  fmtPct,
  fmtTime,
  h,
  HttpError,
  parseTime,
  setStatusBar,
  setText,
  SHANGHAI_OFFSET,
  showForbidden,
  SignedOut,
  startPage,
} from "./common.js";

const REFRESH_MS = 15000;
const RETRY_MS = 5000;
const WINDOWS = [24, 168, 720];
const HOUR_MS = 3600 * 1000;

const CHART_PANELS = ["volume_by_hour", "volume_by_type", "volume_by_district", "hotspots", "quality_by_hour", "compliance_by_unit"];

const COLORS = {
  ink: "#1f2933",
  muted: "#52606d",
  faint: "#9aa5b1",
  line: "#e4e7eb",
  blue: "#1f5fbf",
  green: "#2f8a4c",
  amber: "#c27c0e",
  red: "#c62828",
};
const CHANNEL_COLORS = {
  hotline_12345: "#1f5fbf",
  app: "#1b998b",
  wechat: "#4caf50",
  web: "#7b5ea7",
  letter: "#8d6e63",
  grid_inspector: "#e07b28",
  camera: "#546e7a",
  sensor: "#26a6c9",
  hotline: "#d25d8a",
  other: "#9aa5b1",
};
const FALLBACK_COLORS = ["#3d7dd8", "#e0a526", "#5bb18a", "#b05ac4", "#d9534f", "#6c8ebf"];
const FONT = '"PingFang SC", "Microsoft YaHei", "Noto Sans CJK SC", "Source Han Sans SC", "WenQuanYi Micro Hei", sans-serif';

const state = {
  hours: 24,
  charts: new Map(), // panel name -> {chart, panel, wantRendered}
  seq: 0,
  timer: null,
  lastOk: null,
  stopped: false,
};

// ---------------------------------------------------------------- data shaping --------

function table(panel) {
  if (!panel || !Array.isArray(panel.columns) || !Array.isArray(panel.rows)) return [];
  return panel.rows.map((row) => Object.fromEntries(panel.columns.map((c, i) => [c, row[i]])));
}

const num = (v) => (v === null || v === undefined || v === "" ? null : Number.isFinite(Number(v)) ? Number(v) : null);

const DAY_MS = 24 * HOUR_MS;

/** Floor a moment to its bucket: an hour, or a Beijing calendar day. */
function floorTo(ms, step) {
  if (step === DAY_MS) return Math.floor((ms + SHANGHAI_OFFSET) / DAY_MS) * DAY_MS - SHANGHAI_OFFSET;
  return Math.floor(ms / HOUR_MS) * HOUR_MS;
}

/** Bucket starts (epoch ms) covering the window since..until, one per hour or per day. */
function timeBuckets(range, rows, step) {
  let since = parseTime(range && range.since);
  let until = parseTime(range && range.until);
  if (!since || !until) {
    const stamps = rows.map((r) => parseTime(r.hour)).filter(Boolean).map((d) => d.getTime());
    if (!stamps.length) return [];
    since = new Date(Math.min(...stamps));
    until = new Date(Math.max(...stamps) + HOUR_MS);
  }
  const out = [];
  for (let t = floorTo(since.getTime(), step); t < until.getTime() && out.length < 2000; t += step) out.push(t);
  return out;
}

function bucketIndex(buckets, step) {
  const index = new Map(buckets.map((t, i) => [t, i]));
  return (value) => {
    const d = parseTime(value);
    if (!d) return -1;
    const i = index.get(floorTo(d.getTime(), step));
    return i === undefined ? -1 : i;
  };
}

function bucketLabel(ms, step, hours) {
  if (step === DAY_MS) return fmtDay(new Date(ms));
  return hours <= 24 ? fmtTime(new Date(ms)) : fmtDateTime(new Date(ms));
}

function windowHours(data) {
  return data.range && data.range.hours ? Number(data.range.hours) : state.hours;
}

/** Subtitle of a time panel: how its buckets are cut. */
function setPanelNote(name, text) {
  const note = panelEl(name).querySelector(".card-note");
  if (note) setText(note, text);
}

// ---------------------------------------------------------------- chart options -------

const baseText = { fontFamily: FONT, color: COLORS.ink, fontSize: 12 };
const axisCommon = {
  axisLine: { lineStyle: { color: COLORS.faint } },
  axisTick: { lineStyle: { color: COLORS.faint } },
  axisLabel: { color: COLORS.muted, fontFamily: FONT },
  splitLine: { lineStyle: { color: COLORS.line } },
};
const tooltipCommon = {
  confine: true,
  textStyle: { fontFamily: FONT, fontSize: 12, color: COLORS.ink },
  borderColor: COLORS.line,
};

function optVolumeByHour(rows, data) {
  const hours = windowHours(data);
  const step = hours > 168 ? DAY_MS : HOUR_MS;
  setPanelNote("volume_by_hour", step === DAY_MS ? "按渠道，每天" : "按渠道，每小时");
  const buckets = timeBuckets(data.range, rows, step);
  const at = bucketIndex(buckets, step);
  const labels = (data.labels && data.labels.channels) || CHANNELS;
  const byChannel = new Map();
  for (const r of rows) {
    const i = at(r.hour);
    if (i < 0) continue;
    const ch = r.channel || "other";
    if (!byChannel.has(ch)) byChannel.set(ch, new Array(buckets.length).fill(0));
    byChannel.get(ch)[i] += num(r.reports) || 0;
  }
  const channels = [...byChannel.keys()].sort((a, b) => sum(byChannel.get(b)) - sum(byChannel.get(a)));
  const asArea = buckets.length > 48;
  return {
    textStyle: baseText,
    animationDurationUpdate: 300,
    tooltip: { ...tooltipCommon, trigger: "axis", axisPointer: { type: asArea ? "line" : "shadow" } },
    legend: { top: 0, left: 0, itemWidth: 12, itemHeight: 10, textStyle: { color: COLORS.muted, fontFamily: FONT } },
    grid: { left: 8, right: 16, top: 32, bottom: 4, containLabel: true },
    xAxis: {
      type: "category",
      data: buckets.map((t) => bucketLabel(t, step, hours)),
      boundaryGap: !asArea,
      ...axisCommon,
      splitLine: { show: false },
      axisLabel: { ...axisCommon.axisLabel, hideOverlap: true },
    },
    yAxis: { type: "value", minInterval: 1, ...axisCommon },
    series: channels.map((ch, k) => ({
      name: labels[ch] || CHANNELS[ch] || ch,
      type: asArea ? "line" : "bar",
      stack: "reports",
      data: byChannel.get(ch),
      barMaxWidth: 28,
      symbol: "none",
      lineStyle: { width: 1 },
      areaStyle: asArea ? { opacity: 0.85 } : undefined,
      itemStyle: { color: CHANNEL_COLORS[ch] || FALLBACK_COLORS[k % FALLBACK_COLORS.length] },
      emphasis: { focus: "series" },
    })),
  };
}

function sum(values) {
  return values.reduce((a, b) => a + (b || 0), 0);
}

function optQualityByHour(rows, data) {
  const hours = windowHours(data);
  // Accuracy rests on few reviewed reports an hour: over a week or a month, days read better.
  const step = hours > 24 ? DAY_MS : HOUR_MS;
  setPanelNote("quality_by_hour", step === DAY_MS ? "自动派单率与准确率，每天" : "自动派单率与准确率，每小时");
  const buckets = timeBuckets(data.range, rows, step);
  const at = bucketIndex(buckets, step);
  const agg = buckets.map(() => ({ reports: 0, auto: 0, fb: 0, correct: 0, rate: null, acc: null, n: 0 }));
  for (const r of rows) {
    const i = at(r.hour);
    if (i < 0) continue;
    const a = agg[i];
    a.reports += num(r.reports) || 0;
    a.auto += num(r.auto_dispatched) || 0;
    a.fb += num(r.auto_with_feedback) || 0;
    a.correct += num(r.auto_correct) || 0;
    a.rate = num(r.auto_rate);
    a.acc = num(r.auto_accuracy);
    a.n += 1;
  }
  for (const a of agg) {
    // One row per bucket: the server's own ratios; several (days): ratios of the sums.
    if (a.n > 1 || (a.n === 1 && a.rate === null && a.reports)) a.rate = a.reports ? a.auto / a.reports : null;
    if (a.n > 1 || (a.n === 1 && a.acc === null && a.fb)) a.acc = a.fb ? a.correct / a.fb : null;
  }
  const pct = (v) => (v === null ? null : +(v * 100).toFixed(2));
  const dense = buckets.length > 48;
  const labels = buckets.map((t) => bucketLabel(t, step, hours));
  return {
    textStyle: baseText,
    animationDurationUpdate: 300,
    tooltip: {
      ...tooltipCommon,
      trigger: "axis",
      formatter: (ps) => {
        const i = ps[0].dataIndex;
        const a = agg[i];
        return (
          `${labels[i]}<br/>` +
          `自动派单率 <b>${fmtPct(a.rate)}</b>（${a.auto} / ${a.reports} 件）<br/>` +
          `自动派单准确率 <b>${fmtPct(a.acc)}</b>（${a.correct} / ${a.fb} 件反馈）`
        );
      },
    },
    legend: { top: 0, left: 0, itemWidth: 14, itemHeight: 8, textStyle: { color: COLORS.muted, fontFamily: FONT } },
    grid: { left: 8, right: 16, top: 32, bottom: 4, containLabel: true },
    xAxis: {
      type: "category",
      data: labels,
      boundaryGap: false,
      ...axisCommon,
      splitLine: { show: false },
      axisLabel: { ...axisCommon.axisLabel, hideOverlap: true },
    },
    yAxis: { type: "value", min: 0, max: 100, interval: 25, ...axisCommon, axisLabel: { ...axisCommon.axisLabel, formatter: "{value}%" } },
    series: [
      {
        name: "自动派单率",
        type: "line",
        data: agg.map((a) => pct(a.rate)),
        showSymbol: !dense,
        symbolSize: 5,
        lineStyle: { width: 2 },
        itemStyle: { color: COLORS.blue },
      },
      {
        name: "自动派单准确率",
        type: "line",
        data: agg.map((a) => pct(a.acc)),
        showSymbol: !dense,
        symbolSize: 5,
        connectNulls: true,
        lineStyle: { width: 2 },
        itemStyle: { color: COLORS.green },
      },
    ],
  };
}

function optVolumeByType(rows) {
  const top = rows
    .map((r) => ({ code: r.code || "", name: r.event_name || "", n: num(r.reports) || 0 }))
    .sort((a, b) => b.n - a.n)
    .slice(0, 15);
  return {
    textStyle: baseText,
    animationDurationUpdate: 300,
    tooltip: { ...tooltipCommon, trigger: "axis", axisPointer: { type: "shadow" } },
    grid: { left: 8, right: 48, top: 4, bottom: 4, containLabel: true },
    xAxis: { type: "value", minInterval: 1, ...axisCommon },
    yAxis: {
      type: "category",
      inverse: true,
      data: top.map((t) => `${t.code} ${t.name}`.trim()),
      ...axisCommon,
      axisTick: { show: false },
      axisLabel: { ...axisCommon.axisLabel, color: COLORS.ink, interval: 0 },
    },
    series: [
      {
        name: "报件数",
        type: "bar",
        data: top.map((t) => t.n),
        barMaxWidth: 16,
        itemStyle: { color: COLORS.blue, borderRadius: [0, 2, 2, 0] },
        label: { show: true, position: "right", color: COLORS.ink, fontFamily: FONT },
      },
    ],
  };
}

function optVolumeByDistrict(rows) {
  const list = rows.map((r) => ({ d: r.district || "未识别", n: num(r.reports) || 0 })).sort((a, b) => b.n - a.n);
  return {
    textStyle: baseText,
    animationDurationUpdate: 300,
    tooltip: { ...tooltipCommon, trigger: "axis", axisPointer: { type: "shadow" } },
    grid: { left: 8, right: 8, top: 24, bottom: 4, containLabel: true },
    xAxis: {
      type: "category",
      data: list.map((x) => x.d),
      ...axisCommon,
      axisTick: { show: false },
      axisLabel: { ...axisCommon.axisLabel, color: COLORS.ink, interval: 0, rotate: list.length > 8 ? 30 : 0 },
    },
    yAxis: { type: "value", minInterval: 1, ...axisCommon },
    series: [
      {
        name: "报件数",
        type: "bar",
        data: list.map((x) => x.n),
        barMaxWidth: 36,
        itemStyle: { color: "#3b7ddd", borderRadius: [2, 2, 0, 0] },
        label: { show: true, position: "top", color: COLORS.ink, fontFamily: FONT },
      },
    ],
  };
}

function optHotspots(rows, data) {
  const classLabels = (data.labels && data.labels.event_classes) || {};
  const totals = new Map();
  const classesSeen = new Set();
  for (const r of rows) {
    const d = r.district || "未识别";
    totals.set(d, (totals.get(d) || 0) + (num(r.reports) || 0));
    if (r.event_class) classesSeen.add(r.event_class);
  }
  const districts = [...totals.keys()].sort((a, b) => totals.get(b) - totals.get(a));
  const classes = [...new Set([...Object.keys(classLabels).sort(), ...[...classesSeen].sort()])].filter(
    (c) => classesSeen.has(c) || Object.keys(classLabels).length <= 12,
  );
  const xi = new Map(classes.map((c, i) => [c, i]));
  const yi = new Map(districts.map((d, i) => [d, i]));
  const cells = new Map();
  for (const r of rows) {
    const x = xi.get(r.event_class);
    const y = yi.get(r.district || "未识别");
    if (x === undefined || y === undefined) continue;
    const k = `${x},${y}`;
    cells.set(k, (cells.get(k) || 0) + (num(r.reports) || 0));
  }
  const points = [...cells.entries()].map(([k, v]) => [...k.split(",").map(Number), v]);
  const max = Math.max(1, ...points.map((p) => p[2]));
  // Dark cells (the upper half of the scale) carry white figures.
  const items = points.map((p) => (p[2] / max > 0.55 ? { value: p, label: { color: "#ffffff" } } : { value: p }));
  return {
    textStyle: baseText,
    animationDurationUpdate: 300,
    tooltip: {
      ...tooltipCommon,
      formatter: (p) => `${districts[p.value[1]]} · ${classLabels[classes[p.value[0]]] || classes[p.value[0]]}<br/>报件 <b>${p.value[2]}</b>`,
    },
    grid: { left: 8, right: 8, top: 4, bottom: 44, containLabel: true },
    xAxis: {
      type: "category",
      data: classes.map((c) => classLabels[c] || c),
      splitArea: { show: false },
      axisTick: { show: false },
      axisLine: { show: false },
      axisLabel: { color: COLORS.ink, fontFamily: FONT, interval: 0, rotate: classes.length > 6 ? 35 : 0 },
    },
    yAxis: {
      type: "category",
      inverse: true,
      data: districts,
      axisTick: { show: false },
      axisLine: { show: false },
      axisLabel: { color: COLORS.ink, fontFamily: FONT, interval: 0 },
    },
    visualMap: {
      min: 0,
      max,
      calculable: false,
      orient: "horizontal",
      left: "center",
      bottom: 0,
      itemHeight: 120,
      itemWidth: 10,
      text: [String(max), "0"],
      textStyle: { color: COLORS.muted, fontFamily: FONT },
      inRange: { color: ["#f3f6fb", "#ffd27a", "#f08a3c", "#c62828"] },
    },
    series: [
      {
        name: "报件数",
        type: "heatmap",
        data: items,
        label: {
          show: true,
          fontFamily: FONT,
          fontSize: 11,
          color: COLORS.ink,
          formatter: (p) => (p.value[2] ? p.value[2] : ""),
        },
        itemStyle: { borderColor: "#ffffff", borderWidth: 1 },
        emphasis: { itemStyle: { borderColor: COLORS.ink, borderWidth: 1 } },
      },
    ],
  };
}

function complianceColor(v) {
  if (v < 0.8) return COLORS.red;
  if (v < 0.95) return COLORS.amber;
  return COLORS.green;
}

function optComplianceByUnit(rows) {
  const list = rows
    .map((r) => ({ unit: r.unit || "未确定", due: num(r.due) || 0, ok: num(r.in_time) || 0, c: num(r.compliance) }))
    .filter((x) => x.c !== null)
    .sort((a, b) => a.c - b.c || b.due - a.due)
    .slice(0, 20);
  return {
    textStyle: baseText,
    animationDurationUpdate: 300,
    tooltip: {
      ...tooltipCommon,
      trigger: "axis",
      axisPointer: { type: "shadow" },
      formatter: (ps) => {
        const x = list[ps[0].dataIndex];
        return `${x.unit}<br/>按时响应 <b>${fmtPct(x.c)}</b>（${x.ok} / ${x.due}）`;
      },
    },
    grid: { left: 8, right: 96, top: 4, bottom: 4, containLabel: true },
    xAxis: { type: "value", min: 0, max: 100, interval: 25, ...axisCommon, axisLabel: { ...axisCommon.axisLabel, formatter: "{value}%" } },
    yAxis: {
      type: "category",
      inverse: true,
      data: list.map((x) => x.unit),
      ...axisCommon,
      axisTick: { show: false },
      axisLabel: { ...axisCommon.axisLabel, color: COLORS.ink, interval: 0, width: 190, overflow: "truncate" },
    },
    series: [
      {
        name: "按时响应率",
        type: "bar",
        barMaxWidth: 14,
        data: list.map((x) => ({ value: +(x.c * 100).toFixed(2), itemStyle: { color: complianceColor(x.c) } })),
        label: {
          show: true,
          position: "right",
          fontFamily: FONT,
          color: COLORS.ink,
          formatter: (p) => `${fmtPct(list[p.dataIndex].c)}（${list[p.dataIndex].ok}/${list[p.dataIndex].due}）`,
        },
      },
    ],
  };
}

const BUILDERS = {
  volume_by_hour: optVolumeByHour,
  quality_by_hour: optQualityByHour,
  volume_by_type: optVolumeByType,
  volume_by_district: optVolumeByDistrict,
  hotspots: optHotspots,
  compliance_by_unit: optComplianceByUnit,
};

/** Whether a built option has something to draw. */
function hasData(option) {
  return (option.series || []).some((s) => (s.data || []).some((v) => v !== null && v !== undefined && (typeof v !== "object" || v.value !== null)));
}

// ---------------------------------------------------------------- rendering -----------

function panelEl(name) {
  return $(`[data-testid=panel-${name}]`);
}

function setEmpty(panel, text) {
  let box = panel.querySelector(".panel-empty");
  if (!text) {
    if (box) box.remove();
    return;
  }
  if (!box) {
    box = h("div", { class: "panel-empty" });
    panel.append(box);
  }
  setText(box, text);
}

function chartFor(name) {
  let c = state.charts.get(name);
  if (c) return c;
  const panel = panelEl(name);
  const el = panel.querySelector(".chart");
  const chart = window.echarts.init(el, null, { renderer: "canvas", locale: "ZH" });
  c = { chart, panel, wantRendered: false };
  chart.on("finished", () => {
    if (c.wantRendered) panel.dataset.rendered = "true";
  });
  new ResizeObserver(() => chart.resize()).observe(el);
  state.charts.set(name, c);
  return c;
}

function renderChart(name, rows, data) {
  const panel = panelEl(name);
  panel.dataset.rows = String(rows.length);
  if (!window.echarts) {
    panel.dataset.rendered = "false";
    setEmpty(panel, "图表库未安装（请运行 make setup）");
    return;
  }
  const option = BUILDERS[name](rows, data);
  const c = chartFor(name);
  const nonEmpty = rows.length > 0 && hasData(option);
  c.wantRendered = nonEmpty;
  if (!nonEmpty) {
    panel.dataset.rendered = "false";
    c.chart.clear();
    setEmpty(panel, "暂无数据");
    return;
  }
  setEmpty(panel, null);
  c.chart.setOption(option, { replaceMerge: ["series", "xAxis", "yAxis", "visualMap"] });
}

function renderTotals(row) {
  const r = row || {};
  setText($("[data-testid=total-reports]"), fmtInt(r.reports ?? 0));
  setText($("[data-testid=total-auto-rate]"), fmtPct(r.auto_rate));
  setText($("[data-testid=total-auto-accuracy]"), fmtPct(r.auto_accuracy));
  setText($("[data-testid=total-compliance]"), fmtPct(r.compliance));
  setText($("#total-reports-foot"), `自动派单 ${fmtInt(r.auto_dispatched ?? 0)} 件`);
  setText($("#total-auto-rate-foot"), `其余转人工审核`);
  setText($("#total-auto-accuracy-foot"), `抽检反馈 ${fmtInt(r.auto_with_feedback ?? 0)} 件，正确 ${fmtInt(r.auto_correct ?? 0)} 件`);
  setText($("#total-compliance-foot"), `应响应 ${fmtInt(r.due ?? 0)} 件，按时 ${fmtInt(r.in_time ?? 0)} 件`);
  const comp = num(r.compliance);
  const el = $("[data-testid=total-compliance]").closest(".counter");
  el.classList.toggle("alert", comp !== null && comp < 0.8);
  el.classList.toggle("warn", comp !== null && comp >= 0.8 && comp < 0.95);
}

function renderPlaces(rows, typeRows) {
  const panel = panelEl("top_places");
  panel.dataset.rows = String(rows.length);
  const names = new Map(typeRows.map((t) => [t.code, t.event_name]));
  const body = $("#places-body");
  body.replaceChildren(
    ...rows.map((r, i) =>
      h(
        "tr",
        { "data-testid": "place-row" },
        h("td", { class: "num col-rank muted" }, String(i + 1)),
        h("td", {}, r.district || "—"),
        h("td", {}, r.street || "—"),
        h("td", { class: "ellipsis", title: r.location || "" }, r.location || "—"),
        h("td", { class: "num strong" }, fmtInt(r.reports)),
        h("td", { class: "ellipsis" }, h("span", { class: "code" }, r.top_code || ""), " ", names.get(r.top_code) || ""),
      ),
    ),
  );
  if (!rows.length) body.append(h("tr", { class: "empty-row" }, h("td", { colspan: 6 }, "暂无数据")));
}

function render(data) {
  const panels = data.panels || {};
  const t = (name) => table(panels[name]);
  const totals = t("totals");
  renderTotals(totals[0]);
  for (const name of CHART_PANELS) {
    try {
      renderChart(name, t(name), data);
    } catch (err) {
      console.error(`panel ${name} failed`, err);
      setEmpty(panelEl(name), "图表绘制失败");
    }
  }
  renderPlaces(t("top_places"), t("volume_by_type"));
  const range = data.range || {};
  setText($("#range-text"), range.since && range.until ? `${fmtDateTime(range.since)} — ${fmtDateTime(range.until)}（北京时间）` : "");
  $("#range-text").title = range.since ? `${fmtFull(range.since)} — ${fmtFull(range.until)}` : "";
  setText($("#data-time"), fmtTime(new Date(), true));
}

// ---------------------------------------------------------------- loop ----------------

function schedule(ms) {
  clearTimeout(state.timer);
  state.timer = setTimeout(load, ms);
}

async function load() {
  if (state.stopped) return;
  const seq = ++state.seq;
  const hours = state.hours;
  try {
    const data = await api.get(`/api/city?hours=${hours}`);
    if (seq !== state.seq) return; // a newer request (e.g. the range changed) took over
    render(data);
    state.lastOk = new Date();
    setStatusBar(null);
    document.body.dataset.ready = "true";
    schedule(REFRESH_MS);
  } catch (err) {
    if (err instanceof SignedOut || seq !== state.seq) return;
    if (err instanceof HttpError && err.status === 403) {
      state.stopped = true;
      showForbidden();
      return;
    }
    const since = state.lastOk ? `，数据停留在 ${fmtTime(state.lastOk, true)}` : "";
    setStatusBar(`数据更新失败（${err.message || "网络错误"}）${since}，正在重试…`);
    console.warn("city refresh failed", err);
    schedule(RETRY_MS);
  }
}

function initRange() {
  const params = new URLSearchParams(location.search);
  const asked = Number(params.get("hours"));
  state.hours = WINDOWS.includes(asked) ? asked : 24;
  const select = $("#hours");
  select.value = String(state.hours);
  select.addEventListener("change", () => {
    state.hours = Number(select.value);
    const url = new URL(location.href);
    url.searchParams.set("hours", String(state.hours));
    history.replaceState(null, "", url.pathname + url.search);
    // The charts now stand for the old window: not "rendered" until the new data is drawn.
    for (const name of CHART_PANELS) panelEl(name).dataset.rendered = "false";
    clearTimeout(state.timer);
    load();
  });
}


initRange();
startPage(() => {
  if (!window.echarts) console.warn("ECharts missing: run `python -m web.assets` (make setup)");
  load();
});
