"""What a dispatcher reads off an appeal besides its place and type: urgency, mood, whether
the caller has reported it before, and content flags.

``analyse(text, channel, code, domain)``:

- urgency: the most urgent of the taxonomy's urgency for ``code`` (when known) and the text's
  own signals, then one level up for a repeat complaint:
    * danger happening now (闻到煤气味, 着火, 触电, 电线掉落, 塌陷, 井盖丢失, 有人落水, 被困...)
      -> the most urgent level; the same words as a risk or hypothesis (存在火灾隐患,
      一旦着火, 担心漏电) -> at least the second level; negated (没有闻到煤气味, 无人受伤) ->
      nothing;
    * at least the second level: vulnerable people harmed or endangered in the same sentence
      (老人摔倒, 孩子冻感冒; a mere mention such as "孩子上学的必经之路" does not count),
      no water/heating/power together with cold (停暖 + 零下, 室温只有12度), a blocked fire
      lane, something about to fall;
  Levels come from the domain (ordered by respond_minutes), so a deployment's names work.
- repeat_complaint: the caller says an earlier report was not handled (又打电话, 再次反映,
  第三次反映, 多次反映, 上次反映了没人管, 至今未解决...). A recurring problem (又堆满了,
  第三次停水) is not a repeat complaint, nor a conditional (如果还不解决我就再次反映), nor a
  first report (第一次反映). "还没解决" and the like count only with a past report
  mentioned (反映过, 打过电话, 答复会处理).
- sentiment: a small weighted lexicon with negation (不满意) and intensifiers (非常, 太);
  "谢谢" closing a request ("麻烦尽快处理，谢谢") is politeness, not praise; abuse found by
  the content screen counts as negative.
- flags: ``content_screen.screen(text).flags``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from processors.content_screen import screen
from processors.pii import fold
from schemas.domain import Domain

Sentiment = Literal["negative", "neutral", "positive"]


@dataclass(frozen=True, slots=True)
class AppealAnalysis:
    urgency: str  # one of the domain's urgency levels
    urgency_reasons: tuple[str, ...]
    sentiment: Sentiment
    sentiment_score: float  # -1..1
    repeat_complaint: bool
    repeat_evidence: tuple[str, ...]
    flags: tuple[str, ...]  # content_screen categories


# --- text signals -------------------------------------------------------------------------
_DANGER = re.compile(
    r"(?:燃气|煤气|天然气|液化气)[^，,。！？!?；;.\n]{0,8}"
    r"(?:味|泄漏|泄露|漏气|冒气|嘶嘶|有声音|破损|破裂|断裂|撞坏)"
    r"|着火|起火|失火|火灾|冒烟|浓烟|明火|火苗|火势|烧起来了|窜火|冒火|火光|爆炸"
    r"|触电|漏电|电线(?:掉|断|落|垂)|高压线(?:掉|断|落)|电线杆(?:倒|断)"
    r"|塌陷|坍塌|塌方|塌了|陷下去|塌下去|下陷|下沉|陷了(?:一|个)|陷出|掏空|掉到坑里"
    r"|井盖(?:丢失|丢了|没了|被偷|不见了|缺失|掉下去)|没有井盖|井盖被人?偷"
    r"|落水|溺水|掉(?:进|到)(?:河|海|水|井)里?|有人掉(?:进|下)"
    r"|被困|困在|困人"
    r"|车祸|交通事故|相撞|追尾|把人撞|撞到人|(?:行人|骑车的|人)被撞"
    r"|撞倒了?(?:一个|一位)?(?:人|行人|老人|小孩|孩子)|侧翻|车翻了|伤者|躺在地上|有人受伤|受重伤|流血"
    r"|昏迷|晕倒|生命危险"
)
# A danger word in a clause with these is a risk, not an emergency.
_RISK = re.compile(
    r"一旦|万一|如果|若是|要是|担心|害怕|怕|容易|可能|会不会|防止|以防|隐患|预防|避免|以免|小心"
    r"|风险|危险性|预警|演练|宣传|感觉|似乎|好像|真$|迹象"
)
# ... or followed, in its clause, by these (有塌陷的迹象, 着火了咋整, 火灾隐患).
_RISK_AFTER = re.compile(r"迹象|前兆|隐患|风险|咋整|怎么办|谁负责|进不来|开不进来|来不及|可就")
# Within the four characters before a danger word ("不" only right before it: 不知道谁家着火了).
_NEGATED = ("没有", "没", "未", "无", "不是", "并非", "未见", "未发现")
# Smoke from cooking or a grill is no fire.
_HARMLESS_SMOKE = re.compile(r"烧烤|烤串|油烟|做饭|炒菜|烟囱|抽烟|吸烟|香烟|烟头")

_VULNERABLE = re.compile(
    r"老人|老年人|老太太|老大爷|老奶奶|老爷爷|孩子|小孩|儿童|婴儿|宝宝|孕妇|残疾|独居|瘫痪|卧床"
    r"|病人|患者|行动不便|轮椅|[七八九]十多?岁"
)
_HARM = re.compile(
    r"冻|感冒|发烧|生病|病倒|摔|绊倒|崴|受伤|危险|被困|困在|出不了门|下不了楼|没法出门|无法出门"
    r"|健康|取暖|喘不上气|呛|晕|住院|急救|没水喝|吃不上|上不了厕所|做不了饭|透析|吸氧|呼吸机"
)
_OUTAGE = re.compile(
    r"停水|没水|断水|停电|没电|断电|停暖|没有?暖气|暖气不热|暖器不热|暖气不供|不供暖|暖气冰凉"
    r"|暖气片冰凉|家里冰凉|停气"
)
_COLD = re.compile(
    r"冬天|冬季|寒冬|零下|大冷天|天冷|这么冷|天寒|冻|寒潮|降温|下雪|冷得|冷死|冰凉"
    r"|(?:室温|屋里|家里|室内)(?:只有|才|仅)?(\d{1,2})度"
)
_FIRE_LANE = re.compile(r"消防通道|消防车道|生命通道")
_BLOCKED = re.compile(r"堵|占|停满|停了|被占|挡|锁|封")
_FALLING = re.compile(
    r"摇摇欲坠|随时(?:可能|会)?(?:掉|倒|塌|砸)|快(?:要)?(?:倒|掉|塌)了|砸到人|砸伤"
)
_SENTENCE = re.compile(r"[^。！？!?；;.\n]+")
_CLAUSE_BREAK = "，,。！？!?；;.\n"

# Repeat complaints: an earlier report to the authorities that was not handled.
# A count from two up (第一次 is a first report).
_NUM = r"(?:[二三四五六七八九十两几]|十[一二三四五六七八九]|[2-9]|[1-9]\d)"
_REPORT = r"(?:反映|投诉|来电|致电|拨打|打电话|打了?12345|打热线|举报|报修|反馈|求助|打过电话)"
_REPEAT_STRONG = re.compile(
    r"又(?:打|拨)了?(?:电话|12345|热线|市长热线)"
    r"|再次(?:反映|投诉|来电|致电|反馈|求助|举报|打电话|拨打|报修)"
    r"|重复(?:来电|投诉|反映)"
    rf"|第{_NUM}(?:次|回|遍){_REPORT}"
    rf"|(?:多次|屡次|反复|几次|好几次|好多次|无数次|很多次|数次|{_NUM}次){_REPORT}"
    rf"|(?:反映|投诉|打电话|打|报|报修|举报|来电|打热线|找)(?:过|了)(?:好几|好多|多|几|无数|很多|{_NUM})(?:次|回|遍)"
    r"|(?:之前|此前|以前|上次|上回|前几天|前段时间|上周|上个月|去年|早就|早已|曾经?|已经|已)"
    r"(?:已经|已|曾|也|都|就)?(?:反映|投诉|打过|举报|报修|来电|致电|找过|报过|拨打过)(?:过)?"
    r"|(?:12345|热线|市长热线)(?:也|都)?打了(?:好几|好多|多|几|{_NUM})(?:次|回|遍)"
    r"|(?:反映|投诉|多次)(?:未果|无果)"
    r"|不是第一次(?:反映|投诉|打电话|来电)"
    r"|至今(?:未|没有?|还没有?|仍未|都没)(?:解决|处理|人管|人处理)"
    r"|(?:仍|依然|仍然)未(?:解决|处理)"
    r"|一直(?:没人|没有人|无人|未|没有?)处理|迟迟(?:未|没有?|不)(?:处理|解决)"
    r"|(?:答复|回复|说|承诺)(?:会|将)?(?:处理|解决)(?:[，,]|但|可是|却|结果)"
)
_REPEAT_WEAK = re.compile(
    r"还(?:是)?没(?:有)?(?:解决|处理)|一直没(?:有)?解决|没有得到解决|始终没(?:有)?解决"
    r"|一直没人管|还是没人管"
)
_PAST_REPORT = re.compile(r"反映过|投诉过|打过|报过|找过|报修过|举报过|答复|回复|说会|承诺")
_CONDITIONAL = re.compile(r"如果|若|要是|假如|否则|不然|再不|倘若|如再|万一|下次")
_FUTURE = ("会", "将", "准备", "打算", "还得", "只能")
_CONSEQUENCE = ("就", "便", "会", "将", "只能", "只好", "还要")
_FIRST_TIME = re.compile(r"第一次|首次|头一次|头一回|从没|从来没|未曾")

# Sentiment: term weight (positive > 0).
_SENTIMENT_TERMS: dict[str, float] = {
    "谢谢": 0.6,
    "感谢": 0.8,
    "表扬": 1.2,
    "点赞": 1.0,
    "满意": 0.8,
    "辛苦了": 0.6,
    "好评": 1.0,
    "及时": 0.5,
    "效率高": 0.8,
    "负责": 0.5,
    "热情": 0.5,
    "给力": 0.8,
    "太好了": 0.8,
    "解决了": 0.6,
    "已解决": 0.5,
    "感激": 0.9,
    "锦旗": 1.2,
    "赞": 0.6,
    "称赞": 1.0,
    "好样的": 1.0,
    "投诉": -0.6,
    "气愤": -1.0,
    "愤怒": -1.0,
    "太差": -1.0,
    "差劲": -1.0,
    "不作为": -1.0,
    "失望": -0.9,
    "无语": -0.6,
    "恶心": -0.7,
    "受不了": -0.7,
    "忍无可忍": -1.0,
    "烦死": -0.7,
    "气死": -0.8,
    "吵死": -0.5,
    "臭死": -0.5,
    "急死": -0.6,
    "愁死": -0.6,
    "吓死": -0.6,
    "崩溃": -0.8,
    "糟糕": -0.7,
    "敷衍": -0.9,
    "推诿": -0.9,
    "踢皮球": -0.9,
    "不满": -0.8,
    "不满意": -1.0,
    "可恶": -0.8,
    "过分": -0.7,
    "闹心": -0.6,
    "心累": -0.6,
    "受够了": -0.9,
    "够了": -0.5,
    "服了": -0.5,
    "没人管": -0.6,
    "不管": -0.4,
    "有没有人管": -0.7,
    "管不管": -0.5,
    "干啥去了": -0.7,
    "像话吗": -0.7,
    "还让不让人活": -0.9,
    "欺负": -0.7,
    "脏乱差": -0.6,
    "情绪激动": -0.8,
    "扰民": -0.3,
    "严重": -0.3,
    "不像话": -0.8,
    "推来推去": -0.8,
    "没用": -0.5,
    "破防": -0.6,
    "emo": -0.5,
    "无奈": -0.5,
    "生气": -0.8,
    "太过分": -0.9,
    "要疯了": -0.8,
    "合理吗": -0.6,
}
_SENTIMENT_RE = re.compile(
    "|".join(re.escape(t) for t in sorted(_SENTIMENT_TERMS, key=len, reverse=True))
)
_INTENSIFIERS = (
    "非常",
    "特别",
    "极其",
    "十分",
    "超级",
    "实在",
    "相当",
    "极度",
    "很",
    "太",
    "真",
    "好",
)
_SENT_NEGATIONS = ("不太", "不够", "并不", "毫不", "没有", "不", "没", "别", "未")
_EMOJI_SENTIMENT: dict[str, float] = {
    **dict.fromkeys("😡😤😠🤬💢👎😭😩😞😓🙄😷", -0.5),
    **dict.fromkeys("👍😊🌹❤", 0.6),
}
_NEUTRAL_BAND = 0.2
_POLITE = frozenset(("谢谢",))
_REQUEST = re.compile(r"希望|请|麻烦|要求|尽快|赶紧|诉求|盼|求|能不能|帮忙")


def _levels(domain: Domain) -> tuple[str, ...]:
    """The domain's urgency levels, least urgent first."""
    return tuple(sorted(domain.urgency_minutes, key=lambda k: -domain.urgency_minutes[k]))


# Clauses are read within a window, so that a long text without punctuation costs
# linear time however many matches it has.
_CLAUSE_WINDOW = 60


def _clause_before(text: str, at: int) -> str:
    lo = max(0, at - _CLAUSE_WINDOW)
    start = max(max(text.rfind(c, lo, at) for c in _CLAUSE_BREAK) + 1, lo)
    return text[start:at]


def _clause_after(text: str, at: int) -> str:
    hi = min(len(text), at + _CLAUSE_WINDOW)
    ends = [i for i in (text.find(c, at, hi) for c in _CLAUSE_BREAK) if i != -1]
    return text[at : min(ends, default=hi)]


def _text_level(view: str, reasons: list[str]) -> int:
    """0: no signal, 1: at least the second level, 2: the most urgent level."""
    level = 0
    for m in _DANGER.finditer(view):
        word = m.group()
        before = _clause_before(view, m.start())
        if before.endswith("不") or any(n in before[-4:] for n in _NEGATED):
            continue
        if word == "冒烟" and _HARMLESS_SMOKE.search(view[max(0, m.start() - 8) : m.start()]):
            continue
        if _RISK.search(before) or _RISK_AFTER.search(_clause_after(view, m.end())):
            if level < 1:
                reasons.append(f"risk: {word}")
            level = max(level, 1)
            continue
        reasons.append(f"danger: {word}")
        return 2
    for sentence in _SENTENCE.finditer(view):
        s = sentence.group()
        who = _VULNERABLE.search(s)
        # 石老人 is a place (a beach in 崂山区), not an old person.
        if who is not None and not (
            who.group() == "老人" and s[who.start() - 1 : who.start()] == "石"
        ):
            harm = _HARM.search(s)
            if harm is not None:
                reasons.append(f"vulnerable: {who.group()}+{harm.group()}")
                level = max(level, 1)
                break
    outage = _OUTAGE.search(view)
    if outage is not None:
        cold = next(
            (c for c in _COLD.finditer(view) if c.group(1) is None or int(c.group(1)) <= 16),
            None,
        )
        if cold is not None:
            reasons.append(f"outage in the cold: {outage.group()}+{cold.group()}")
            level = max(level, 1)
    for sentence in _SENTENCE.finditer(view):
        s = sentence.group()
        lane = _FIRE_LANE.search(s)
        if lane is not None and _BLOCKED.search(s) is not None:
            reasons.append(f"fire lane blocked: {lane.group()}")
            level = max(level, 1)
            break
    falling = _FALLING.search(view)
    if falling is not None:
        reasons.append(f"about to fall: {falling.group()}")
        level = max(level, 1)
    return level


def _hypothetical(view: str, at: int) -> bool:
    """如果还不解决，我就再次反映 / 我会再次反映 / 第一次反映过: no earlier report."""
    clause = _clause_before(view, at)
    if _CONDITIONAL.search(clause) or clause.endswith(_FUTURE) or _FIRST_TIME.search(clause):
        return True
    start = at - len(clause) - 1
    previous = _clause_before(view, start) if start > 0 else ""
    return _CONDITIONAL.search(previous) is not None and any(c in clause for c in _CONSEQUENCE)


def repeat_signals(text: str) -> tuple[str, ...]:
    """The phrases saying an earlier report was not handled (empty: not a repeat)."""
    return _repeats(fold(text).text)


def _repeats(view: str) -> tuple[str, ...]:
    found: list[str] = []
    past_report = _PAST_REPORT.search(view) is not None
    for pattern, needs_past in ((_REPEAT_STRONG, False), (_REPEAT_WEAK, True)):
        if needs_past and not past_report:
            continue
        for m in pattern.finditer(view):
            if _hypothetical(view, m.start()):
                continue
            found.append(m.group())
    return tuple(dict.fromkeys(found))


def sentiment(text: str, abusive: bool = False) -> tuple[Sentiment, float]:
    """A label and a score in -1..1 from the lexicon (see the module doc)."""
    return _sentiment(fold(text).text, text, abusive)


def _sentiment(view: str, text: str, abusive: bool) -> tuple[Sentiment, float]:
    view = view.lower()
    total = 0.0
    polite_close = _REQUEST.search(view) is not None
    for m in _SENTIMENT_RE.finditer(view):
        weight = _SENTIMENT_TERMS[m.group()]
        if polite_close and m.group() in _POLITE:
            weight = 0.2  # "麻烦尽快处理，谢谢": the close of a request, not praise
        before = view[max(0, m.start() - 3) : m.start()]
        if before.endswith(_INTENSIFIERS):
            weight *= 1.5
            before = before[:-1]
        if before.endswith(_SENT_NEGATIONS) and not m.group().startswith("不"):
            # 不满意 is its own term; 不及时, 没解决了 flip; a negated complaint word is mild.
            weight = -weight if weight > 0 else -weight * 0.3
        total += weight
    for ch, weight in _EMOJI_SENTIMENT.items():
        if ch in text:
            total += weight
    if total < 0 and ("！！" in view or "!!" in view or "？？" in view or "??" in view):
        total *= 1.2
    if abusive:
        total -= 1.0
    score = round(math.tanh(total / 1.5), 4)
    label: Sentiment = (
        "positive" if score > _NEUTRAL_BAND else "negative" if score < -_NEUTRAL_BAND else "neutral"
    )
    return label, score


def analyse(text: str, channel: str | None, code: str | None, domain: Domain) -> AppealAnalysis:
    """Urgency, sentiment, repeat complaint and content flags of one appeal or event text.

    ``channel`` is accepted for the callers' convenience and recorded in no rule yet: the
    text decides (a hotline operator's summary and a citizen's message say the same things).
    """
    del channel  # see the docstring
    levels = _levels(domain)
    view = fold(text or "").text
    reasons: list[str] = []
    rank = 0
    event_type = domain.event_types.get(code) if code else None
    if event_type is not None and event_type.urgency in levels:
        rank = levels.index(event_type.urgency)
        reasons.append(f"code {event_type.code}: {event_type.urgency}")
    signal = _text_level(view, reasons)
    if signal == 2:
        rank = len(levels) - 1
    elif signal == 1:
        rank = max(rank, min(1, len(levels) - 1))
    repeats = _repeats(view)
    if repeats and rank < len(levels) - 1:
        rank += 1
        reasons.append("repeat complaint: one level up")
    screened = screen(text or "")
    label, score = _sentiment(view, text or "", abusive="abuse" in screened.flags)
    return AppealAnalysis(
        urgency=levels[rank],
        urgency_reasons=tuple(reasons),
        sentiment=label,
        sentiment_score=score,
        repeat_complaint=bool(repeats),
        repeat_evidence=repeats,
        flags=screened.flags,
    )
