"""How each kind of reporter writes: six styles with their own structure.

- ``operator``: a 12345 operator's summary of a call (formal, "来电人反映…诉求…");
- ``colloquial``: a citizen's own words (dialect, slips, missing punctuation, ！！！, questions);
- ``short_message``: WeChat/app one-liners with emoji, pinyin and English bits;
- ``web_form``: a web/app form with a title and a body;
- ``letter``: a long letter with background, history and a plea;
- ``inspector``: a grid inspector's terse report ("巡查发现…，已拍照上传").

The address is inserted last (``_ADDR`` placeholder) so that slips, dialect and netspeak touch
only the reporter's words, never the names the unit is decided from.
"""

# One phrase per line is the format of the phrase blocks below; wrapping would split phrases.
# ruff: noqa: E501

from __future__ import annotations

import random
from dataclasses import dataclass

from models.simulator import noise
from models.simulator.addresses import Address
from models.simulator.grammar import Phrases, pick, weighted
from models.simulator.material_a import MATERIAL_A
from models.simulator.material_d import MATERIAL_D

STYLES: tuple[str, ...] = (
    "operator",
    "colloquial",
    "short_message",
    "web_form",
    "letter",
    "inspector",
)
_ADDR = "\x00"
_URGENCY_RANK = {"normal": 1, "urgent": 2, "critical": 3}


class MaterialError(ValueError):
    """The domain has an event code the simulator has no text material for."""


@dataclass(frozen=True, slots=True)
class CodeText:
    code: str
    core: Phrases
    say: Phrases
    terse: Phrases
    effects: Phrases
    wants: Phrases
    topics: tuple[str, ...]
    emoji: tuple[str, ...]
    home: bool
    inspect: float
    short_durations: bool  # seasonal: it cannot have lasted "大半年"
    locs: tuple[str, ...]
    loc_cum: tuple[float, ...]


def load_code_texts(codes: tuple[str, ...]) -> dict[str, CodeText]:
    material = {**MATERIAL_A, **MATERIAL_D}
    missing = [c for c in codes if c not in material]
    if missing:
        raise MaterialError(
            f"no text material for event codes {missing}: add them to models/simulator/material_*.py"
        )
    out: dict[str, CodeText] = {}
    for code in codes:
        m = material[code]
        locs, cum = weighted(m["locs"])
        out[code] = CodeText(
            code=code,
            core=Phrases(m["core"]),
            say=Phrases(m["say"]),
            terse=Phrases(m["terse"]),
            effects=Phrases(m["effects"]),
            wants=Phrases(m["wants"]),
            topics=tuple(m["topics"].split("|")),
            emoji=tuple(m.get("emoji", "").split()),
            home=m.get("home") == "1",
            inspect=float(m.get("inspect", "1")),
            short_durations=m.get("dur") == "short",
            locs=locs,
            loc_cum=cum,
        )
    return out


# ---- generic material ------------------------------------------------------------------
_DUR_CASUAL = {
    "normal": Phrases("""
已经{好几天|三四天|一个多星期|半个多月|一个多月|两三个月|大半年}了
{这情况|这问题|这事}{持续|存在}{好长时间|一段时间|很久}了
{从上个月|从上周|从年初|从去年}{开始|起}就{这样|这个样子}
不是一天两天了
{天天|每天|隔三差五}都这样
{反映|打电话}{过|了}好几次{了|，一直没解决}
{今天|今早|昨天}{发现的|才注意到}
{最近|这段时间|这几天}{一直|总是}这样
"""),
    "urgent": Phrases("""
{今天早上|今天上午|昨天晚上|刚才}{发现的|开始的|就这样了}
已经{两天|一天|大半天}了
从昨天到现在{一直|都}这样
{刚刚|就在刚才}看到的
{好几天|两三天}了{也没人管|还没处理}
"""),
    "critical": Phrases("""
就在{刚才|刚刚|几分钟前|十分钟前}
{现在|目前}{还在|正在}{继续|持续}
{刚刚|刚才}{发生的|看到的}
{事情|情况}{正在|刚}发生
"""),
}
_DUR_FORMAL = {
    "normal": Phrases("""
该问题已持续{数日|一周左右|一月有余|较长时间|半年多}
来电人称已多次反映{未解决|未果}
据来电人称，问题{自上周起|近期|长期}{一直存在|持续出现|反复出现}
来电人表示{此前|之前}{已|曾}{反映过|投诉过}
"""),
    "urgent": Phrases("""
来电人于{今日上午|今日|昨晚|今晨}发现
据来电人称{今日|昨日}{出现|发生}
问题{已持续|持续}{一天|两天|数小时}
"""),
    "critical": Phrases("""
来电人称现场情况紧急
据来电人称情况{正在发生|仍在持续}
来电人称{刚刚|就在刚才}发生
"""),
}
_EMO = (
    "气死了",
    "太闹心了",
    "真是服了",
    "无语了",
    "烦死了",
    "心累",
    "受够了",
    "真没办法",
    "太过分了",
    "忍无可忍了",
    "真是够了",
    "愁死了",
    "太糟心了",
    "真闹心",
)
_RHET = (
    "到底有没有人管？",
    "这合理吗？",
    "就没人管管吗？",
    "还让不让人活了？",
    "有关部门都干啥去了？",
    "12345打了好几回了，管用吗？",
    "物业不管，社区也不管，到底找谁？",
    "这像话吗？",
    "要等出了事才管吗？",
    "谁来管管啊？",
    "难道没人看见吗？",
    "这都多久了？",
)
_GREET = (
    "你好，",
    "您好，",
    "你好12345，",
    "喂，",
    "我要反映个问题，",
    "反映个事儿：",
    "投诉！",
    "求助！",
    "麻烦问一下，",
    "",
    "",
    "我是附近的居民，",
    "我是这边的住户，",
)
_CLOSE_CASUAL = (
    "谢谢！",
    "麻烦了！",
    "谢谢你们了",
    "拜托了",
    "辛苦了",
    "赶紧的吧",
    "盼回复",
    "求求了",
    "",
    "",
)
_WANT_LEAD_CASUAL = ("希望", "麻烦", "请", "能不能", "求", "盼", "麻烦你们", "赶紧", "快点")
_LIVE = ("我家住", "俺家住", "我住在", "我在", "我们住", "我家在", "俺家在")
_WANT_SHORT = ("求处理", "快来人", "管管吧", "尽快处理", "赶紧的", "谢谢", "🙏", "求助", "有人管吗")

_OP_INTRO = (
    "市民来电反映：",
    "来电人反映：",
    "市民来电称：",
    "来电人称：",
    "群众来电反映，",
    "市民来电：",
    "来电反映：",
    "市民反映：",
)
_OP_CLOSE = (
    "请相关部门尽快处理。",
    "请核实处理。",
    "望尽快解决。",
    "来电人要求尽快处理并回复。",
    "请相关部门核实并处理。",
    "来电人情绪激动，请尽快处理。",
    "来电人表示已多次反映，请重视。",
    "来电人不需要回复。",
    "请职能部门现场查看处理。",
    "请协调处理。",
    "来电人要求给予答复。",
    "",
    "",
)
_OP_WANT = ("诉求：", "来电人诉求：", "来电人希望", "来电人要求", "希望相关部门", "要求", "诉求为")

_INSP_LEAD = (
    "巡查发现：",
    "巡查中发现",
    "网格员巡查发现，",
    "日常巡查发现",
    "【巡查上报】",
    "",
    "",
    "网格巡查：",
)
_INSP_ACT = (
    "已拍照上传。",
    "已拍照取证。",
    "现场照片已上传。",
    "已上报平台。",
    "请相关部门处置。",
    "已现场劝导，效果不佳。",
    "已设置临时警示。",
    "需协调处置。",
    "已告知当事人。",
    "（附照片2张）",
    "（附照片3张）",
    "待处置。",
    "已拍照，请派单处理。",
)

_SALUTE = (
    "尊敬的领导：",
    "尊敬的市长：",
    "市长您好：",
    "12345热线的工作人员您好：",
    "各位领导好！",
    "尊敬的有关部门领导：",
    "您好！",
)
_IDENT = Phrases("""
我是{住在|家住}附近的一名{普通|}{居民|退休职工|退休教师|上班族|个体户}
我是一名{在这里住了二十多年的|土生土长的青岛}老居民
本人是{附近|这一片}的住户
我是一名{快递员|出租车司机|学生家长|外卖骑手}，每天都要经过这里
""")
_BACKGROUND = {
    "residential": "我们小区是{九十年代|八十年代|2000年前后}建的老小区，住的{大多是|多是}老年人\n小区里住着好几百户人家，{老人孩子|老老少少}很多",
    "main_road": "这条路是周边居民出行和孩子上学的必经之路\n这一段{车流量|人流量}很大，{早晚高峰|上下班时候}尤其多",
    "back_street": "这条小巷住着几十户人家，{老人|孩子}{很多|不少}\n这是附近居民{进出|买菜}的必经之路",
    "commercial": "这里{人流量很大|商铺林立|每天人来人往}\n附近{商户|买菜的居民}很多",
    "park_square": "每天{早晚|清晨傍晚}来{锻炼|散步|遛弯}的{老人孩子|市民}很多\n这里是附近居民{休闲|健身}的地方",
    "waterfront": "这里是{市民|游客|附近居民}{常来|散步|游玩}的地方\n{夏天|节假日}{游客|人}特别多",
    "construction_site": "{工地|这个项目}{周边|旁边}就是居民区\n{工地|项目}{开工|施工}{已经|}{一年多|大半年}了",
    "village": "村里{住的|留守的}多是老人和孩子\n我们村{不大|有几百户人家}，{大家|村民}都很关心这事",
    "industrial": "{工业园|厂区}周边就是居民区\n附近住着{很多|不少}{工人|居民}",
}
_BACKGROUND_PH = {k: Phrases(v) for k, v in _BACKGROUND.items()}
_HISTORY = Phrases("""
之前{已经|}{打过|拨打过}{好几次|多次}热线电话，{也找过社区|也找过物业}，{一直|始终}没有得到解决
{物业|社区}{说不归他们管|推来推去}，{谁都不管|一直拖着}
{上个月|去年}也反映过，{当时|}{说|答复}会处理，{到现在|至今}{也没|还没}{动静|解决}
""")
_PLEA = (
    "恳请有关部门高度重视，尽快{w}",
    "希望领导在百忙之中关注一下这个问题，{w}",
    "恳请领导帮我们解决这个难题，{w}",
    "希望有关部门能{w}，还大家一个{安全|干净|安静}的环境",
    "请给老百姓一个说法，{w}",
)
_PLEA_PH = tuple(Phrases(p.replace("{w}", "\x01")) for p in _PLEA)
_LETTER_CLOSE = ("此致\n敬礼！", "谢谢！", "盼复！", "万分感谢！", "感谢！", "急盼解决！")

_SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董程曹袁邓许傅沈曾彭吕苏卢蒋蔡贾丁魏薛叶阎潘杜戴夏钟汪田任姜范方石姚谭廖邹熊金陆郝孔白崔康毛邱秦江史顾侯邵孟龙万段雷钱汤尹易常武乔贺赖龚文"
_GIVEN = (
    "建国",
    "秀英",
    "志强",
    "丽娟",
    "海涛",
    "红梅",
    "国庆",
    "晓东",
    "玉兰",
    "德胜",
    "春燕",
    "伟",
    "芳",
    "磊",
    "静",
    "敏",
    "洋",
    "勇",
    "军",
    "杰",
    "娜",
    "桂英",
    "秀兰",
    "明",
    "强",
    "丽",
    "永刚",
    "淑珍",
    "文华",
    "海燕",
    "立新",
    "建华",
    "志刚",
    "玉梅",
    "俊杰",
    "欣怡",
    "子涵",
    "浩然",
    "雨桐",
    "宇航",
)
_HONORIFIC = ("先生", "女士", "师傅", "阿姨", "大爷", "大姐", "女士", "先生")
_PHONE_PREFIX = (
    "130",
    "131",
    "132",
    "135",
    "136",
    "137",
    "138",
    "139",
    "150",
    "151",
    "152",
    "155",
    "156",
    "158",
    "159",
    "176",
    "177",
    "180",
    "181",
    "182",
    "186",
    "187",
    "188",
    "189",
    "199",
)


@dataclass(frozen=True, slots=True)
class Caller:
    """An invented caller. Phone numbers carry 0000 in the middle (138 0000 1234), the way
    test data is written, so no real subscriber is ever named; ID numbers use the city-level
    area code 370200 and a checksum character that is never valid."""

    name: str  # as the operator writes it: 王女士, 张建国
    phone: str
    id_number: str | None


def make_caller(rng: random.Random) -> Caller:
    surname = pick(rng, tuple(_SURNAMES))
    name = surname + (pick(rng, _GIVEN) if rng.random() < 0.45 else pick(rng, _HONORIFIC))
    phone = f"{pick(rng, _PHONE_PREFIX)}0000{int(rng.random() * 10000):04d}"
    id_number = None
    if rng.random() < 0.15:
        year = 1940 + int(rng.random() * 65)
        month = 1 + int(rng.random() * 12)
        day = 1 + int(rng.random() * 28)
        id_number = f"370200{year}{month:02d}{day:02d}{int(rng.random() * 1000):03d}Z"
    return Caller(name=name, phone=phone, id_number=id_number)


def _phone_written(rng: random.Random, phone: str) -> str:
    if rng.random() < 0.3:
        return f"{phone[:3]} {phone[3:7]} {phone[7:]}"
    if rng.random() < 0.15:
        return f"{phone[:3]}-{phone[3:7]}-{phone[7:]}"
    return phone


def _c(part: str) -> str:
    """A clause joined with a comma, or nothing."""
    return f"，{part}" if part else ""


# ---- E01 markings ------------------------------------------------------------------------
_MARK_FORMAL = (
    '井盖上印有"{m}"字样',
    '该井盖标识为"{m}"',
    "系{m}井盖",
    "{m}井盖",
    '井盖上标有"{m}"',
    "井盖为{m}井盖",
)
_MARK_CASUAL = (
    "井盖上写着{m}",
    "是{m}的井盖",
    '井盖上有"{m}"俩字',
    "{m}井盖",
    "看了下井盖上印的是{m}",
    "井盖上印着{m}",
    "{m}的井盖",
)
_MARK_UNKNOWN = (
    "井盖上没有字",
    "井盖上的字看不清了",
    "不知道是哪家的井盖",
    "井盖上的标识磨没了",
    "看不出是什么井",
    "井盖上字都磨平了，看不清是哪个单位的",
    "井盖上啥标志也没有",
)
_MARK_DISPLAY = {
    "移动": ("移动", "中国移动"),
    "联通": ("联通", "中国联通"),
    "电信": ("电信", "中国电信"),
}


@dataclass(frozen=True, slots=True)
class Marking:
    word: str | None  # the marking as found in domain.owner_markings; None: unreadable/none
    explicit_unknown: bool  # say that the marking cannot be read (else just do not mention it)


class Composer:
    """The problem-related pieces of one record, ready for a style to arrange."""

    def __init__(
        self,
        rng: random.Random,
        text: CodeText,
        loc: str,
        urgency: str,
        marking: Marking | None,
        second: CodeText | None = None,
        second_first: bool = False,
    ) -> None:
        self.rng = rng
        self.text = text
        self.loc = loc
        self.urgency = urgency
        self.marking = marking
        self.second = second
        self.second_first = second_first

    def _mark(self, clause: str, casual: bool, terse: bool) -> str:
        m = self.marking
        if m is None:
            return clause
        rng = self.rng
        if m.word is None:
            if not m.explicit_unknown:
                return clause
            tag = pick(rng, _MARK_UNKNOWN)
        else:
            word = pick(rng, _MARK_DISPLAY.get(m.word, (m.word,)))
            if terse and clause.startswith("井盖") and rng.random() < 0.6:
                return word + clause
            tag = pick(rng, _MARK_CASUAL if casual else _MARK_FORMAL).format(m=word)
        return f"{tag}，{clause}" if rng.random() < 0.5 else f"{clause}，{tag}"

    def _one(self, text: CodeText, kind: str) -> str:
        phrases = {"core": text.core, "say": text.say, "terse": text.terse}[kind]
        got = phrases.pick(self.rng, self.loc)
        return got or text.core.pick(self.rng, self.loc)

    def problem(self, kind: str) -> str:
        """The problem statement ("core", "say" or "terse"), with a second problem if any."""
        main = self._mark(self._one(self.text, kind), casual=kind == "say", terse=kind == "terse")
        if self.second is None:
            return main
        other = self._one(self.second, kind)
        if not other:
            return main
        rng = self.rng
        if self.second_first:
            joint = pick(
                rng, ("；更要紧的是", "，但更严重的是", "。另外最要命的是", "；还有更急的，")
            )
            return f"{other}{joint}{main}"
        joint = pick(rng, ("；另外", "，同时", "。还有，", "；此外", "，而且", "。另外"))
        return f"{main}{joint}{other}"

    def effect(self) -> str:
        return self.text.effects.pick(self.rng)

    def want(self) -> str:
        return self.text.wants.pick(self.rng)

    def topic(self) -> str:
        return pick(self.rng, self.text.topics)

    def dur(self, formal: bool) -> str:
        table = _DUR_FORMAL if formal else _DUR_CASUAL
        urgency = (
            "urgent" if self.urgency == "normal" and self.text.short_durations else self.urgency
        )
        return table[urgency].pick(self.rng)

    def emoji(self) -> str:
        return noise.emoji(self.rng, self.text.emoji)

    @property
    def urgent(self) -> bool:
        return _URGENCY_RANK[self.urgency] >= 2

    def allow_traditional(self) -> bool:
        # A cover's marking must stay readable as written in the domain (电力, not 電力).
        return self.marking is None


# ---- styles --------------------------------------------------------------------------------
def operator(c: Composer, addr: Address, caller: Caller | None) -> str:
    rng = c.rng
    a = addr.text
    core = c.problem("core")
    eff = c.effect() if rng.random() < 0.6 else ""
    dur = c.dur(formal=True) if rng.random() < 0.45 else ""
    want = c.want()
    close = pick(rng, _OP_CLOSE)
    intro = pick(rng, _OP_INTRO)
    if caller is not None and rng.random() < 0.35:
        phone = _phone_written(rng, caller.phone)
        intro = pick(
            rng,
            (
                f"市民{caller.name}（电话：{phone}）来电反映：",
                f"来电人{caller.name}，联系电话{phone}，反映：",
                f"{caller.name}（{phone}）来电称：",
            ),
        )
        if caller.id_number and rng.random() < 0.5:
            intro = f"来电人{caller.name}（身份证号{caller.id_number}，电话{phone}）反映："
    r = rng.random()
    if c.urgency == "critical" and r < 0.35:
        text = f"紧急！{intro}{a}{core}{_c(eff)}。请立即派人处置。"
    elif r < 0.25:
        text = f"{intro}{a}{core}{_c(dur)}{_c(eff)}。{pick(rng, _OP_WANT)}{want}。{close}"
    elif r < 0.42:
        text = f"{intro}{a}，{core}{_c(eff)}，{pick(rng, ('来电人希望', '希望', '要求'))}{want}。{close}"
    elif r < 0.56:
        text = f"{intro}{core}。具体地址：{a}。{dur + '。' if dur else ''}{pick(rng, _OP_WANT)}{want}。"
    elif r < 0.68:
        text = f"来电人反映{a}存在{c.topic()}问题，{core}{_c(eff)}。{close}"
    elif r < 0.80:
        text = f"{intro}其{pick(rng, ('在', '途经', '路过', '居住的'))}{a}{pick(rng, ('发现', '看到', ''))}{core}，{eff or c.effect()}。来电人{pick(rng, ('希望', '要求', '诉求'))}{want}。"
    elif r < 0.9:
        text = f"来电人反映的问题：{core}。地点：{a}。{dur + '。' if dur else ''}来电人诉求：{want}。{close}"
    else:
        text = (
            f"{intro}{a}{core}。{dur + '，' if dur else ''}{eff or c.effect()}。请相关部门{want}。"
        )
    if caller is not None and "电话" not in text and rng.random() < 0.15:
        text += f"（联系人：{caller.name}，{_phone_written(rng, caller.phone)}）"
    return text


def _want_casual(c: Composer) -> str:
    rng = c.rng
    want = c.want()
    if want.startswith(("尽快", "立即", "马上", "赶紧", "抓紧", "紧急")):
        lead = pick(rng, ("希望", "麻烦", "请", "求", "麻烦你们"))
    else:
        lead = pick(rng, _WANT_LEAD_CASUAL)
    end = "？" if lead == "能不能" else pick(rng, ("", "！", "。", "吧"))
    return f"{lead}{want}{end}"


def colloquial(c: Composer, addr: Address, caller: Caller | None) -> str:
    rng = c.rng
    say = c.problem("say" if rng.random() < 0.6 else "core")
    dur = c.dur(formal=False)
    r = rng.random()
    if r < 0.2:
        text = f"{pick(rng, _GREET)}{_ADDR}{say}，{dur}，{pick(rng, _EMO)}！{pick(rng, _RHET)}{_want_casual(c)}"
    elif r < 0.34:
        text = f"{say}！！就在{_ADDR}，{dur}，{pick(rng, _RHET)}"
    elif r < 0.5:
        text = f"{pick(rng, _LIVE)}{_ADDR}，{say}，{c.effect()}，{_want_casual(c)}{pick(rng, _CLOSE_CASUAL)}"
    elif r < 0.6:
        text = f"我想反映个事，{_ADDR}{say}，{dur}，{pick(rng, _RHET)}"
    elif r < 0.7:
        text = f"{_ADDR}{pick(rng, ('这块儿', '这里', '这边', '那里'))}{say}，{pick(rng, ('咋整啊', '怎么办啊', '谁管管啊', '有人管没'))}"
    elif r < 0.82:
        text = f"{pick(rng, _EMO)}！{_ADDR}{say}，{dur}，{_want_casual(c)}"
    elif r < 0.92:
        text = f"{_ADDR}{say}。{c.effect()}。{pick(rng, _RHET)}"
    else:
        text = f"{pick(rng, _GREET)}{say}，{dur}，{pick(rng, ('地址是', '位置在', '地点：', '在'))}{_ADDR}，{_want_casual(c)}"
    if caller is not None and rng.random() < 0.06:
        text += f"我电话{_phone_written(rng, caller.phone)}"
    return _noisy(c, text, dialect=0.45, slips=0.35, net=0.08, drop=0.2, shout=0.3, half=0.08)


def short_message(c: Composer, addr: Address, caller: Caller | None) -> str:
    rng = c.rng
    k = rng.random()
    if k < 0.3:
        x = c.topic() if c.second is None else c.problem("terse")
    elif k < 0.55:
        x = c.problem("terse")
    elif k < 0.8:
        x = c.problem("say")
    else:
        x = c.problem("core")
    if c.marking is not None and c.marking.word and x == c.topic():
        x = c.problem("terse")
    e = c.emoji() if rng.random() < 0.75 else ""
    r = rng.random()
    if r < 0.3:
        text = f"{_ADDR}{x}{e}"
    elif r < 0.5:
        text = f"{x}！{_ADDR}{e}"
    elif r < 0.62 and c.marking is None:
        text = f"有没有人管管{_ADDR}的{c.topic()}{e}"
    elif r < 0.74:
        text = f"@12345 {_ADDR}{x}{e}"
    elif r < 0.88:
        text = f"{_ADDR}{x}，{pick(rng, _WANT_SHORT)}{e}"
    else:
        text = f"{x}{e or '，'}位置：{_ADDR}"
    if caller is not None and rng.random() < 0.04:
        text += f" 电话{caller.phone}"
    return _noisy(c, text, dialect=0.2, slips=0.2, net=0.25, drop=0.3, shout=0.15, half=0.2)


def web_form(c: Composer, addr: Address, caller: Caller | None) -> str:
    rng = c.rng
    core = c.problem("core" if rng.random() < 0.7 else "say")
    where = addr.place or addr.road or pick(rng, ("我们这边", "附近", "家门口", ""))
    topic = c.topic()
    title = pick(
        rng,
        (
            f"关于{where}{topic}的{pick(rng, ('问题', '反映', '投诉'))}",
            f"{topic}问题",
            f"投诉{topic}",
            f"{topic}，请处理",
            f"{where}{topic}",
            f"反映{topic}",
        ),
    )
    body = f"{_ADDR}{core}，{c.dur(formal=False)}，{c.effect()}。希望{c.want()}。"
    r = rng.random()
    if r < 0.35:
        text = f"标题：{title}\n内容：{body}"
    elif r < 0.6:
        text = f"【{title}】{body}"
    elif r < 0.8:
        text = f"问题描述：{core}。发生地点：{_ADDR}。诉求：{c.want()}。"
    else:
        text = f"{title}\n{body}{pick(rng, ('谢谢！', '盼复。', ''))}"
    return _noisy(c, text, dialect=0.05, slips=0.15, net=0.03, drop=0.05, shout=0.05, half=0.1)


def letter(c: Composer, addr: Address, caller: Caller | None) -> str:
    rng = c.rng
    want = c.want()
    parts = [
        pick(rng, _SALUTE),
        f"{_IDENT.pick(rng)}。",
        f"{_BACKGROUND_PH[c.loc].pick(rng)}。",
        f"{pick(rng, ('现在', '近来', '最近', '一直以来'))}{_ADDR}{c.problem('core')}，{c.dur(formal=False)}，{c.effect()}。",
    ]
    if rng.random() < 0.6:
        parts.append(f"{c.problem('say')}。")
    if rng.random() < 0.7:
        parts.append(f"{_HISTORY.pick(rng)}。")
    parts.append(f"{pick(rng, _PLEA_PH).pick(rng).replace(chr(1), want)}。")
    parts.append(pick(rng, _LETTER_CLOSE))
    sign = pick(rng, ("一位老居民", "附近居民", "一名热心市民", "一名老党员", "住户"))
    if caller is not None and rng.random() < 0.5:
        sign = f"{caller.name} {_phone_written(rng, caller.phone)}"
    parts.append(sign)
    sep = "\n" if rng.random() < 0.5 else ""
    text = sep.join(parts)
    return _noisy(c, text, dialect=0.03, slips=0.1, net=0.0, drop=0.0, shout=0.0, half=0.03)


def inspector(c: Composer, addr: Address, caller: Caller | None) -> str:
    rng = c.rng
    terse = c.problem("terse" if rng.random() < 0.7 else "core")
    act = pick(rng, _INSP_ACT)
    r = rng.random()
    if r < 0.3:
        text = f"{_ADDR}{terse}，{act}"
    elif r < 0.55:
        text = f"{pick(rng, _INSP_LEAD)}{_ADDR}{terse}。{act}"
    elif r < 0.72:
        text = f"{_ADDR}，{terse}，{act}"
    elif r < 0.86:
        text = f"网格员巡查：{terse}，位置：{_ADDR}。{act}"
    else:
        hour = pick(rng, ("上午", "下午", "今日", "早上"))
        text = f"{hour}巡查至{_ADDR}，发现{terse}，{act}"
    return _noisy(c, text, dialect=0.0, slips=0.03, net=0.0, drop=0.05, shout=0.0, half=0.05)


STYLE_RENDERERS = {
    "operator": operator,
    "colloquial": colloquial,
    "short_message": short_message,
    "web_form": web_form,
    "letter": letter,
    "inspector": inspector,
}


def _noisy(
    c: Composer,
    text: str,
    *,
    dialect: float,
    slips: float,
    net: float,
    drop: float,
    shout: float,
    half: float,
) -> str:
    """The reporter's own slips; the address placeholder is untouched by all of them."""
    rng = c.rng
    marked = c.marking is not None
    if rng.random() < dialect:
        text = noise.dialect(text, rng)
        if rng.random() < 0.4:
            text = text.rstrip("。！？!?")
            if not text.endswith(("啊", "吧", "呢", "嘛", "呀", "哈", "了")):
                text += noise.particle(rng)
    if rng.random() < slips:
        text = noise.slip(text, rng, 1 + int(rng.random() * 2))
    if rng.random() < net and not marked:
        text = noise.netspeak(text, rng)
    if rng.random() < drop:
        text = noise.drop_punctuation(text)
    if rng.random() < shout:
        text = noise.shout(text, rng)
    if rng.random() < half:
        text = noise.half_width(text)
    return text


_TIDY = (
    ("小区小区", "小区"),
    ("工地工地", "工地"),
    ("公厕公厕", "公厕"),
    ("！，", "！"),
    ("？，", "？"),
    ("，，", "，"),
    ("，。", "。"),
    ("。，", "。"),
    ("，（", "（"),
    ("：，", "："),
    ("，；", "；"),
)


def finish(c: Composer, text: str, addr: Address, trad_share: float) -> str:
    """Insert the address; occasionally the whole text in traditional characters."""
    out = text.replace(_ADDR, addr.text)
    for doubled, single in _TIDY:
        out = out.replace(doubled, single)
    if c.allow_traditional() and c.rng.random() < trad_share:
        out = noise.to_traditional(out)
    return out


TRADITIONAL_SHARE = {"colloquial": 0.015, "short_message": 0.03, "web_form": 0.02, "letter": 0.03}
