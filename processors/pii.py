"""Personal-data masking for report texts (12345 appeals, inspectors' events).

``mask(text)`` finds mobile and landline numbers, resident ID numbers, licence plates, bank
card numbers, e-mail addresses and the names a text gives, and replaces each by a
placeholder. Spans index the text as given (not a normalised copy), so a caller can
keep, audit or re-mask them.

Placeholders (chosen so that a masked text still reads as a report to a dispatcher):

    phone      [手机号]        landline   [座机]          id_card   [身份证]
    plate      [车牌]          bank_card  [银行卡]        email     [邮箱]
    name       某某  for a full name ("来电人张建国" -> "来电人某某")
               某    for the surname before a form of address: "王女士" -> "某女士",
                     "张师傅" -> "某师傅" (the form of address says how to address the
                     caller and is no personal data; the surname is).

Only the personal part is masked: "联系电话：", "身份证号", "先生" stay. Addresses, house
numbers, dates, times, amounts and counts are never masked: every number rule needs a
number's exact shape (11-digit mobile, checksum- and date-valid ID, Luhn-valid card with a
card-like first digit...; an ID or card number the text introduces as one, "身份证号…",
"卡号…", is masked even when mistyped; one introduced as an order or waybill number is
not), and names need a cue (我叫, 联系人, 来电人, 爱人, a form of address, or a contact
number right after). Not found: a name with no cue (a bare "张建国" mid-sentence), 小李 /
老王, QQ and WeChat IDs.

Matching runs on a folded view of the text (``fold``): full-width digits and letters as
ASCII, dash variants as "-", traditional characters as simplified, and invisible characters
(zero-width spaces, joiners, BOM, bidi marks) dropped, so "138\u200b0000 1234" is still a
phone number; a mobile read out in numerals (一三八零零零零一二三四) is read too. Every
pattern repeats only boundedly, so the time is linear in the text's length.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

PII_TYPES: tuple[str, ...] = (
    "phone", "landline", "id_card", "plate", "bank_card", "email", "name",
)  # fmt: skip
PLACEHOLDERS: dict[str, str] = {
    "phone": "[手机号]",
    "landline": "[座机]",
    "id_card": "[身份证]",
    "plate": "[车牌]",
    "bank_card": "[银行卡]",
    "email": "[邮箱]",
}
FULL_NAME_PLACEHOLDER = "某某"
SURNAME_PLACEHOLDER = "某"


@dataclass(frozen=True, slots=True)
class PiiSpan:
    type: str  # one of PII_TYPES
    start: int  # into the original text
    end: int


@dataclass(frozen=True, slots=True)
class MaskResult:
    text: str
    spans: tuple[PiiSpan, ...]


# --- the folded view -------------------------------------------------------------------
# Traditional -> simplified for the characters the matching words of pii, content_screen
# and appeal_analysis use (generated from jionlp's one-to-one table; a test checks that
# every word's characters are covered). One character each side: the view keeps positions.
_TRAD_PAIRS = (
    "萬万 與与 匃丐 匄丐 業业 叢丛 樷丛 東东 丟丢 兩两 嚴严 個个 箇个 為为 "
    "爲为 麗丽 擧举 舉举 麼么 麽么 烏乌 喬乔 鄉乡 鄕乡 買买 亂乱 瞭了 於于 "
    "雲云 親亲 僅仅 從从 倉仓 們们 價价 眾众 衆众 會会 傳传 傷伤 佀似 躰体 "
    "體体 妳你 側侧 竢俟 脩修 債债 偸偷 媮偷 償偿 兒儿 黨党 蘭兰 関关 關关 "
    "興兴 養养 內内 冄冉 冐冒 農农 辳农 鼕冬 馮冯 氷冰 決决 凍冻 準准 涼凉 "
    "淩凌 幾几 齣出 劉刘 則则 別别 彆别 辦办 動动 勁劲 勢势 區区 毉医 醫医 "
    "華华 單单 賣卖 蔔卜 佔占 盧卢 臥卧 衛卫 衞卫 卻却 壓压 厠厕 廁厕 縣县 "
    "發发 髮发 衹只 隻只 呌叫 檯台 臺台 颱台 葉叶 號号 喫吃 郃合 閤合 弔吊 "
    "衕同 後后 嚮向 曏向 嚇吓 呂吕 嗎吗 吳吴 員员 嗆呛 週周 嘑呼 虖呼 謼呼 "
    "咊和 偺咱 喒咱 囘回 囬回 廻回 迴回 囙因 睏困 囪囱 圍围 囯国 國国 壞坏 "
    "阬坑 墜坠 聲声 処处 處处 備备 復复 複复 夠够 伕夫 頭头 嬭奶 婦妇 媽妈 "
    "薑姜 婁娄 孃娘 嬰婴 嬸婶 孫孙 學学 寧宁 牠它 寶宝 實实 宮宫 傢家 宼寇 "
    "對对 尋寻 將将 儘尽 盡尽 層层 屬属 屢屡 嵗岁 歲岁 嶽岳 峯峰 嶗崂 廵巡 "
    "鞏巩 師师 帳帐 帶带 蓆席 幫帮 夘帽 戼帽 乾干 幹干 榦干 並并 併并 竝并 "
    "莊庄 牀床 庫库 應应 龐庞 廢废 開开 衖弄 張张 強强 彊强 歸归 儅当 噹当 "
    "當当 徃往 悳德 誌志 戀恋 噁恶 惡恶 憤愤 慼戚 鏚戚 戶户 纔才 釦扣 揚扬 "
    "敭扬 擾扰 摺折 報报 擔担 撥拨 拏拿 挐拿 掛挂 擋挡 攩挡 損损 搯掏 擺摆 "
    "搖摇 撡操 傚效 効效 捄救 數数 斷断 旂旗 無无 時时 昬昏 暎映 旾春 昰是 "
    "顯显 晉晋 暈晕 煖暖 煗暖 粬曲 麯曲 朢望 硃朱 機机 殺杀 襍杂 雜杂 權权 "
    "桿杆 邨村 條条 來来 楊杨 闆板 極极 菓果 査查 栁柳 桺柳 棟栋 樣样 欒栾 "
    "樑梁 楳梅 槑梅 樓楼 橫横 歐欧 慾欲 欵款 殘残 慇殷 畢毕 氣气 匯汇 彙汇 "
    "滙汇 湯汤 瀋沈 沒没 滬沪 洩泄 灋法 註注 潑泼 濃浓 淛浙 凃涂 塗涂 溫温 "
    "遊游 潰溃 滾滚 滿满 縯演 燈灯 災灾 烖灾 菑灾 砲炮 礮炮 點点 煙烟 煩烦 "
    "燒烧 熱热 愛爱 爺爷 犢犊 獨独 豬猪 瑪玛 現现 毬球 瓊琼 電电 畧略 瘋疯 "
    "癥症 瘓痪 癡痴 痺痹 癟瘪 癱瘫 蓋盖 盜盗 著着 碼码 禮礼 禍祸 秌秋 鞦秋 "
    "種种 稱称 竄窜 竇窦 耑端 筆笔 簽签 籖签 籤签 簡简 琯管 筦管 粵粤 餻糕 "
    "蹧糟 係系 繫系 緊紧 纍累 紅红 級级 紀纪 綫线 線线 練练 終终 絆绊 經经 "
    "結结 給给 絕绝 絶绝 緒绪 續续 維维 編编 繆缪 羅罗 罷罢 羣群 繙翻 飜翻 "
    "聶聂 聯联 脅胁 脇胁 衚胡 鬍胡 臟脏 髒脏 腦脑 臉脸 骽腿 緻致 艸艹 節节 "
    "蘆芦 芲花 蘤花 囌苏 甦苏 蘇苏 範范 榮荣 葯药 藥药 蔣蒋 懞蒙 濛蒙 矇蒙 "
    "藍蓝 蟲虫 蠻蛮 錶表 裝装 見见 覺觉 觸触 訂订 討讨 讓让 講讲 許许 訪访 "
    "証证 證证 評评 訴诉 試试 話话 該该 詳详 語语 說说 説说 請请 諸诸 諾诺 "
    "諉诿 誰谁 談谈 諧谐 謝谢 譚谭 穀谷 負负 財财 責责 賬账 貨货 質质 貪贪 "
    "賤贱 貼贴 貴贵 費费 賀贺 賊贼 賈贾 賄贿 賴赖 顂赖 讚赞 賛赞 贊赞 贛赣 "
    "趙赵 趕赶 車车 軒轩 轉转 輪轮 輕轻 輛辆 轅辕 邊边 遼辽 達达 過过 運运 "
    "還还 這这 進进 連连 遲迟 跡迹 蹟迹 遞递 偪逼 鄧邓 鄺邝 鄔邬 郵邮 鄒邹 "
    "鄰邻 隣邻 鄭郑 痠酸 裏里 裡里 鈡钟 鍾钟 鐘钟 錢钱 鉛铅 銀银 舖铺 鋪铺 "
    "鎖锁 錦锦 鎮镇 長长 門门 閆闫 問问 間间 閔闵 閙闹 鬧闹 聞闻 閩闽 閻阎 "
    "陽阳 坿附 陸陆 陳陈 陝陕 險险 隨随 隱隐 靜静 靣面 麪面 麵面 韋韦 韓韩 "
    "項项 顧顾 預预 領领 顏颜 顔颜 額额 顛颠 風风 飯饭 饒饶 餽馈 饋馈 馬马 "
    "罵骂 駡骂 駱骆 騎骑 騗骗 騙骗 魯鲁 鮑鲍 雞鸡 鷄鸡 麥麦 蔴麻 黃黄 齊齐 "
    "龍龙 龔龚 "
)
_TRAD: dict[int, str] = {
    ord(pair[0]): pair[1] for pair in _TRAD_PAIRS.split() if len(pair) == 2 and pair[0] != pair[1]
}


def _width_table() -> dict[int, str]:
    table: dict[int, str] = {}
    # Full-width ASCII (ＡＢＣ１２３＠：) and other one-character compatibility forms of
    # digits and letters (superscripts, mathematical digits): the same character in NFKC.
    for block in (range(0xFF01, 0xFF5F), range(0x2070, 0x20A0), range(0x1D7CE, 0x1D800)):
        for cp in block:
            folded = unicodedata.normalize("NFKC", chr(cp))
            if len(folded) == 1 and folded.isascii():
                table[cp] = folded
    for dash in "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\u30fc\u2043":
        table[ord(dash)] = "-"
    for space in "\u00a0\u2002\u2003\u2009\u202f\u3000\t":
        table[ord(space)] = " "
    return table


# Chinese punctuation stays as written (every pattern here reads both forms): most texts
# then have nothing to fold, and a search for a foldable character is all they cost.
_KEEP_PUNCTUATION = frozenset(map(ord, "，！？：；（）"))
_FOLD_TABLE: dict[int, str] = {
    k: v for k, v in {**_width_table(), **_TRAD}.items() if k not in _KEEP_PUNCTUATION
}
# The same with ASCII letters lower-cased (one translate instead of two for the screens).
_FOLD_LOWER_TABLE: dict[int, str] = {
    **{k: v.lower() for k, v in _FOLD_TABLE.items()},
    **{c: chr(c + 32) for c in range(ord("A"), ord("Z") + 1)},
}


def _char_class(table: dict[int, str]) -> re.Pattern[str]:
    return re.compile("[" + "".join(re.escape(chr(c)) for c in sorted(table)) + "]")


_FOLDABLE = _char_class(_FOLD_TABLE)
_FOLDABLE_LOWER = _char_class(_FOLD_LOWER_TABLE)
# Characters that carry no meaning between two digits: zero-width and bidi controls,
# soft hyphen, variation selectors, BOM, C0/C1 controls except tab and newline.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e"
    "\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufe00-\ufe0f\ufeff]"
)
_VISIBLE_RUN = re.compile(
    "[^\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e"
    "\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufe00-\ufe0f\ufeff]+"
)


@dataclass(frozen=True, slots=True)
class Folded:
    """The matching view of a text; ``origin[i]`` is the original index of view char i
    (None: the same positions, nothing was dropped)."""

    text: str
    origin: tuple[int, ...] | None
    original_length: int

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        if self.origin is None:
            return start, end
        if start >= end:
            at = self.origin[start] if start < len(self.origin) else self.original_length
            return at, at
        return self.origin[start], self.origin[end - 1] + 1


def fold(text: str, *, lower: bool = False) -> Folded:
    """The view every matcher here reads (see the module doc); O(len(text)). ``lower``:
    ASCII letters lower-cased too (for the screens' lexicons)."""
    table, foldable = (_FOLD_LOWER_TABLE, _FOLDABLE_LOWER) if lower else (_FOLD_TABLE, _FOLDABLE)
    if _INVISIBLE.search(text) is None:
        if foldable.search(text) is None:
            return Folded(text, None, len(text))
        return Folded(text.translate(table), None, len(text))
    origin: list[int] = []
    parts: list[str] = []
    for run in _VISIBLE_RUN.finditer(text):
        origin.extend(range(run.start(), run.end()))
        parts.append(run.group())
    return Folded("".join(parts).translate(table), tuple(origin), len(text))


# --- number rules -----------------------------------------------------------------------
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9][A-Za-z0-9._%+\-]{0,63}"
    r"(?:@|[ ]?[\[(（]at[\])）][ ]?)"
    r"[A-Za-z0-9][A-Za-z0-9\-]{0,62}(?:(?:\.|[\[(（]dot[\])）])[A-Za-z0-9\-]{1,63}){1,6}"
    r"(?![A-Za-z0-9\-])"
)
# 18-digit resident ID: 6-digit area, birth date, 3-digit sequence, checksum (0-9 or X);
# separators allowed between the parts. The last character is read as any letter so that
# an ID after an explicit cue ("身份证号") is masked even with a mistyped checksum.
_ID18 = re.compile(
    r"(?<![0-9A-Za-z])([1-9]\d{5})[ \-]?((?:18|19|20)\d{2})[ \-]?(\d{2})[ \-]?(\d{2})"
    r"[ \-]?(\d{3})[ \-]?([0-9A-Za-z])(?![0-9A-Za-z])"
)
_ID15 = re.compile(r"(?<![0-9A-Za-z])([1-9]\d{5})(\d{2})(\d{2})(\d{2})(\d{3})(?![0-9A-Za-z])")
_ID_CUE = re.compile(r"(?:身份证|证件|公民身份|身份号|id|ID)[号码]{0,2}[:： ]{0,2}$")
_PROVINCES = frozenset(
    "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54 "
    "61 62 63 64 65 71 81 82 83".split()
)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

# Bank card: 16-19 digits, separators allowed; Luhn decides (with a card-like first digit
# or a cue), so an order number is not masked.
_CARD = re.compile(r"(?<!\d)(?<!\d[ \-])[1-9]\d{3}(?:[ \-]?\d){11,15}(?!\d)")
_CARD_CUE = re.compile(r"(?:卡|卡号|账号|帐号|账户|帐户|转账|汇款|收款)[号码]{0,2}[:： ]{0,2}$")
_CARD_FIRST = frozenset("3456")
# A number introduced as an order, waybill or serial number is not a card or an ID.
_NOT_PII_CUE = re.compile(
    r"(?:订单|单号|编号|流水号|工单|运单|快递|序列号|型号|批号|发票|票号|条码|物流|车次|航班)"
    r"[号码]{0,2}[:： ]{0,2}$"
)

# Mainland mobile: 1[3-9] + 9 digits, an optional +86/0086/86 prefix, one separator
# (space, dash, dot) between any two digits.
_PHONE = re.compile(
    r"(?<!\d)(?<!\d-)(?:(?:\+|00)?86[ \-]{0,2}|[(（]\+?86[)）][ \-]?)?"
    r"1[3-9](?:[ \-.]{0,3}\d){9}(?!\d)(?!-\d)"
)
_SEVEN_DIGITS = re.compile(r"\d(?:[ \-.]{0,3}\d){6}")
# Chinese numerals as a dictating caller says them (幺 for 1): read as digits for mobiles
# only, on a copy of the view (same length), and only where eleven of them run together.
_NUMERALS = str.maketrans("〇零幺一二三四五六七八九", "001123456789")
_NUMERAL_RUN = re.compile(r"[〇零幺一二三四五六七八九]{11}")
# Landline with an area code (0532-8888 8888, (0532)88888888) and 400/800 numbers;
# a bare 7-8 digit local number only right after a phone cue.
_LANDLINE = re.compile(
    r"(?<!\d)(?:[(（]0\d{2,3}[)）][ \-]?|0\d{2,3}[ \-]{0,2})[2-9]\d{2,3}[ \-]?\d{4}"
    r"(?:(?:转|-|ext\.?|分机)\d{1,5})?(?!\d)"
    r"|(?<!\d)[48]00[ \-]?\d{3}[ \-]?\d{4}(?!\d)"
)
_LOCAL_AFTER_CUE = re.compile(
    r"(?:电话|座机|固话|联系方式|电联|热线|tel|TEL|Tel)[:： ]{0,2}([2-9]\d{2,3}[ \-]?\d{4})(?!\d)"
)
# Licence plate: province, issuing letter, 5 characters (6 for new-energy vehicles).
_PLATE = re.compile(
    r"([京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼])[ ]?([A-Za-z])"
    r"[ ·•・.\-]{0,2}([A-Za-z0-9]{5,6})(?![A-Za-z0-9])([挂学警港澳领试超])?"
)
_PLATE_LETTERS = frozenset("ABCDEFGHJKLMNPQRSTUVWXYZ")


def _valid_date(year: int, month: int, day: int) -> bool:
    if not 1 <= month <= 12 or day < 1 or day > _DAYS[month - 1]:
        return False
    if month == 2 and day == 29:
        return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return 1880 <= year <= 2030


def id_checksum_ok(digits17: str, check: str) -> bool:
    total = sum(int(d) * w for d, w in zip(digits17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == check.upper()


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _cue_before(view: str, start: int, cue: re.Pattern[str], width: int = 12) -> bool:
    return cue.search(view[max(0, start - width) : start]) is not None


def _id_cards(view: str) -> list[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    for m in _ID18.finditer(view):
        area, year, month, day, seq, check = m.groups()
        if area[:2] not in _PROVINCES or not _valid_date(int(year), int(month), int(day)):
            continue
        cued = _cue_before(view, m.start(), _ID_CUE)
        if not cued and _cue_before(view, m.start(), _NOT_PII_CUE):
            continue
        if (check.isdigit() or check in "Xx") and id_checksum_ok(
            area + year + month + day + seq, check
        ):
            found.append(m.span())
        elif cued:  # the text says it is an ID: masked even with a wrong checksum
            found.append(m.span())
    for m in _ID15.finditer(view):
        area, yy, month, day, _ = m.groups()
        if _cue_before(view, m.start(), _NOT_PII_CUE):
            continue
        if area[:2] in _PROVINCES and _valid_date(1900 + int(yy), int(month), int(day)):
            found.append(m.span())
    return found


def _bank_cards(view: str) -> list[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    for m in _CARD.finditer(view):
        raw = m.group()
        cued = _cue_before(view, m.start(), _CARD_CUE)
        if not cued and _cue_before(view, m.start(), _NOT_PII_CUE):
            continue
        # The greedy match may run into a following number ("... 1234 3号楼"): also try
        # the prefixes that end at a separator.
        ends = [len(raw)] + [i for i in range(len(raw) - 1, 0, -1) if raw[i] in " -"]
        for end in ends:
            digits = raw[:end].replace(" ", "").replace("-", "")
            if 16 <= len(digits) <= 19 and luhn_ok(digits) and (cued or digits[0] in _CARD_FIRST):
                found.append((m.start(), m.start() + len(raw[:end].rstrip(" -"))))
                break
        else:
            # The text says it is a card ("卡号…"): masked even if mistyped (Luhn fails).
            digits = raw.replace(" ", "").replace("-", "")
            if cued and 16 <= len(digits) <= 19:
                found.append(m.span())
    return found


def _plates(view: str) -> list[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    for m in _PLATE.finditer(view):
        letter, tail = m.group(2).upper(), m.group(3).upper()
        if letter not in _PLATE_LETTERS:
            continue
        digits = sum(ch.isdigit() for ch in tail)
        if len(tail) == 5:
            ok = digits >= 3 or (digits >= 2 and tail[-1].isdigit())
        else:  # new-energy: D/F first (small cars) or last (large vehicles)
            ok = (tail[0] in "DF" and tail[2:].isdigit()) or (
                tail[:5].isdigit() and tail[5] in "DF"
            )
        if ok:
            found.append(m.span())
    return found


# --- names ---------------------------------------------------------------------------------
_SURNAMES = frozenset(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶"
    "程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付傅方白邹孟熊秦邱江尹薛闫阎段雷侯龙史陶"
    "黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷"
    "詹申欧耿关兰焦俞左柳甘祝包宁尚符舒阮柯纪梅童凌毕单季裴霍涂成苗谷盛曲翁冉骆蓝路游辛"
    "靳管柴蒙鲍华喻祁蒲房滕屈饶解牟艾尤阳时穆农司卓古吉缪简车项连芦麦褚娄窦戚岑景党宫费"
    "卜冷晏席卫米柏宗瞿桂全佟应臧闵苟邬边卞姬师仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩佘池"
    "查麻苑迟邝洪赖谈"
)
_COMPOUND_SURNAMES = (
    "欧阳",
    "司马",
    "诸葛",
    "上官",
    "东方",
    "皇甫",
    "令狐",
    "慕容",
    "司徒",
    "夏侯",
    "尉迟",
    "公孙",
    "端木",
    "宇文",
    "长孙",
    "独孤",
    "南宫",
    "西门",
    "澹台",
    "轩辕",
    "万俟",
)
# Surnames that are also the second character of common words before a form of address
# (门卫大爷, 保安大叔, 宿管阿姨, 出租车师傅, 语文老师): read as a surname only after a
# boundary or a word that introduces a person.
_WORDISH_SURNAMES = frozenset(
    "安卫管车程文史任时路明成关全应师商阳单华党边连解向方高金石江龙白万常于宁尚甘包景宫"
    "席米麻池查项古吉农司游沙桑艾尤曲和牛房费冷"
)
_INTRODUCERS = frozenset("的是叫找问请跟和与给向让被对民人称及位户系姓")
_HONORIFICS = (
    "女士",
    "先生",
    "小姐",
    "师傅",
    "阿姨",
    "大爷",
    "大姐",
    "大妈",
    "大娘",
    "大叔",
    "大哥",
    "老师",
    "奶奶",
    "爷爷",
    "同志",
    "经理",
    "主任",
    "老板",
    "律师",
    "医生",
    "警官",
)
# Characters that end or interrupt a name: function words, verbs of reporting, places.
_NOT_GIVEN = frozenset(
    "的了在是有和与及或对把被到从往于向给让将就都也还又很我你他她它们这那哪些个称说要请已经"
    "因为所以但而并旁附侧近边外内口处某来电反映诉举报住家楼号路街区县镇村女士先师傅姨爷叔伯"
    "婶舅等今昨每各该其此您咱俺打拨讲问找叫去过着吗呢吧啊呀哦嘛想曾多次也已现老右未无匿略详"
)
# Common words that open with a surname character and can stand where a name stands
# ("下午三点左右 138…", "居民安全。").
_NOT_NAMES = frozenset(
    "左右 前后 上下 安全 安静 安排 方便 方面 方向 高度 高兴 时间 时候 全部 关于 成为 应该 常常 "
    "于是 宁可 包括 明天 明显 连续 江边 金额 石头 白天 万一 龙头 车辆 车位 车库 路边 路口 路灯 "
    "路面 马上 马路 马桶 严重 许多 毛病 周围 周边 周末 司机 单位 单元 华人 师傅 文明 和谐 孔洞 "
    "谷底 尚未 曲折 简单 景区 农村 农田 党员 宫殿 费用 卫生 管理 车主 邻居 商户 商铺 阳台 温度 "
    "程序 任何 史上 齐全 易拉宝 雷雨 钱财 汤水 牛奶 鲁莽 韩国 宋体 谢谢 辛苦 麻烦 张贴 何时 何处 "
    "温度 常年 高层 高峰 高空 向东 向西 向南 向北 包装 余下 万分 周一 周二 周三 周四 周五 周六 "
    "周日 周天 金属 石材 龙门 田间 林地 黄色 白色 蓝色 夏天 秋天 冬天 春天 宁静 康复 施工 文件 "
    "方案 关门 关注 管道 车道 时段 明早 明晚".split()
)
# What may follow a name: punctuation, a digit, or a word that starts the next phrase.
_AFTER_NAME = frozenset(
    "，,。.；;：:、（(）)【】[] \n!！?？\"“”'‘’0123456789+来反称电手联住家在的是说投举表同先女"
    "打向于从今昨要请想和与及等也都"
)
_CUE_STRONG = ("姓名", "名字", "联系人", "署名", "签名", "落款", "收件人", "申请人", "经办人")
_CUE_INTRO = ("我叫", "我名叫", "我的名字是", "我的名字叫", "名字叫", "本人叫", "本人是", "本人")
# Words that follow a person's name in a report (市民高芳说, 市民安宁反映).
_REPORTING = ("说", "称", "反映", "来电", "表示", "（", "(", "电话", "投诉", "举报")
_KINSHIP = ("爱人", "老伴", "妻子", "丈夫", "老公", "老婆", "儿子", "女儿", "母亲", "父亲")
_CUE_WEAK = frozenset(("市民", "居民", "业主", "我是", "联系", "找", "叫", "名叫", *_KINSHIP))
_CUE_ROLE = (
    *_KINSHIP,
    "名叫",
    "叫",
    "来电人",
    "来电者",
    "反映人",
    "投诉人",
    "举报人",
    "求助人",
    "报案人",
    "市民",
    "居民",
    "业主",
    "户主",
    "我是",
    "联系",
    "找",
    "姓",
)
_CUE = re.compile(
    "("
    + "|".join(sorted((*_CUE_STRONG, *_CUE_INTRO, *_CUE_ROLE), key=len, reverse=True))
    + r")(?:[:：]|是|为)?[ ]?"
)
_HONORIFIC_RE = re.compile(
    "(" + "|".join(_COMPOUND_SURNAMES) + "|[" + "".join(sorted(_SURNAMES)) + "])"
    "(?=" + "|".join(_HONORIFICS) + ")"
)
_BOUNDARY = frozenset("，,。.；;：:、（(）)【】[] \n!！?？\"“”'‘’")


def _is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf"


def _surname_at(view: str, i: int) -> int:
    """Length of a surname starting at i (2 for a compound surname), 0 if none."""
    if view[i : i + 2] in _COMPOUND_SURNAMES:
        return 2
    return 1 if i < len(view) and view[i] in _SURNAMES else 0


def _honorific_at(view: str, i: int) -> bool:
    return view.startswith(_HONORIFICS, i)


def _after_ok(view: str, end: int) -> bool:
    return end >= len(view) or view[end] in _AFTER_NAME or _honorific_at(view, end)


def _full_name_at(view: str, i: int, any_surname: bool) -> tuple[int, int] | None:
    """A 2-4 character name starting at i: (end, given-name length) or None."""
    s = _surname_at(view, i)
    if s == 0:
        if not any_surname or i >= len(view) or not _is_cjk(view[i]) or view[i] in _NOT_GIVEN:
            return None
        s = 1
    given = 0
    while given < 2:
        at = i + s + given
        if at >= len(view) or not _is_cjk(view[at]) or view[at] in _NOT_GIVEN:
            break
        if _honorific_at(view, at):
            break
        given += 1
    # The longest reading that ends where a name can end.
    for g in range(given, 0, -1):
        if _after_ok(view, i + s + g) and view[i : i + s + g] not in _NOT_NAMES:
            return i + s + g, g
    return None


def _skip_back(view: str, j: int, limit: int = 3) -> int:
    """j moved left over up to ``limit`` separators ("，（", " ：")."""
    stop = max(0, j - limit)
    while j > stop and view[j - 1] in " ：:，,（(":
        j -= 1
    return j


def _names(view: str, taken: list[tuple[int, int]]) -> list[tuple[int, int, bool]]:
    """(start, end, surname_only) of the names a text gives."""
    out: list[tuple[int, int, bool]] = []
    # Surname before a form of address: the surname alone is the personal part.
    for m in _HONORIFIC_RE.finditer(view):
        start = m.start()
        surname = m.group(1)
        prev = view[start - 1] if start > 0 else ""
        if len(surname) == 1 and surname in _WORDISH_SURNAMES and prev and _is_cjk(prev):
            if prev not in _INTRODUCERS:
                continue
        out.append((start, m.end(), True))
    for m in _CUE.finditer(view):
        cue, at = m.group(1), m.end()
        if at >= len(view):
            continue
        if cue == "姓":  # 我姓王 / 本人姓欧阳
            s = _surname_at(view, at)
            if s and _after_ok(view, at + s):
                out.append((at, at + s, True))
            continue
        if _surname_at(view, at) and _honorific_at(view, at + _surname_at(view, at)):
            continue  # read above, as surname + form of address
        # Only a form's field label vouches for a name with a surname not in our list.
        strong = cue in _CUE_STRONG
        got = _full_name_at(view, at, any_surname=strong)
        if got is None:
            continue
        # After a weak cue a two-character "name" opening with a word-like surname is
        # mostly a word (居民安全, 市民方便): three characters or nothing.
        if (
            cue in _CUE_WEAK
            and got[1] == 1
            and view[at] in _WORDISH_SURNAMES
            and not view.startswith(_REPORTING, got[0])
        ):
            continue
        out.append((at, got[0], False))
    # A name written right before a contact number ("张建国 138 0000 1234").
    for start, _ in taken:
        j = _skip_back(view, start)
        for word in ("联系电话", "电话", "手机", "tel"):
            if view.endswith(word, 0, j):
                j -= len(word)
                break
        j = _skip_back(view, j)
        for length in (4, 3, 2):
            i = j - length
            if i < 0:
                continue
            before = view[i - 1] if i > 0 else "\n"
            # A boundary, a change of script (…@qq.com张建国), or a cue.
            if (
                before not in _BOUNDARY
                and not before.isascii()
                and not view.endswith(("市民", "来电人", "联系人"), 0, i)
            ):
                continue
            got = _full_name_at(view, i, any_surname=False)
            if got is not None and got[0] == j:
                out.append((i, j, False))
                break
    return out


# --- everything together ---------------------------------------------------------------------
def _detect(text: str) -> list[tuple[str, int, int, str]]:
    """(type, start, end, placeholder) in the original text, in order, not overlapping."""
    if not text:
        return []
    folded = fold(text)
    view = folded.text
    candidates: list[tuple[str, int, int]] = []
    if "@" in view or "at" in view:
        candidates += [("email", *m.span()) for m in _EMAIL.finditer(view)]
    # Every number rule needs seven digits or more: most texts are done with one search.
    if _SEVEN_DIGITS.search(view):
        candidates += [("id_card", s, e) for s, e in _id_cards(view)]
        candidates += [("bank_card", s, e) for s, e in _bank_cards(view)]
        candidates += [("phone", *m.span()) for m in _PHONE.finditer(view)]
        candidates += [("landline", *m.span()) for m in _LANDLINE.finditer(view)]
        candidates += [("landline", *m.span(1)) for m in _LOCAL_AFTER_CUE.finditer(view)]
    if _NUMERAL_RUN.search(view):  # a number read out: 一三八零零零零一二三四
        digits = view.translate(_NUMERALS)
        candidates += [("phone", *m.span()) for m in _PHONE.finditer(digits)]
    candidates += [("plate", s, e) for s, e in _plates(view)]
    accepted: list[tuple[str, int, int, str]] = []
    occupied = bytearray(len(view) + 1)
    # In this order: the earlier rule wins an overlap (an e-mail's digits are no phone,
    # an ID's digits no card).
    for kind, s, e in candidates:
        if not any(occupied[s:e]):
            accepted.append((kind, s, e, PLACEHOLDERS[kind]))
            occupied[s:e] = b"\x01" * (e - s)
    numbers = [(s, e) for kind, s, e, _ in accepted if kind in ("phone", "landline")]
    for s, e, surname_only in _names(view, numbers):
        if not any(occupied[s:e]):
            placeholder = SURNAME_PLACEHOLDER if surname_only else FULL_NAME_PLACEHOLDER
            accepted.append(("name", s, e, placeholder))
            occupied[s:e] = b"\x01" * (e - s)
    accepted.sort(key=lambda c: c[1])
    out: list[tuple[str, int, int, str]] = []
    for kind, s, e, placeholder in accepted:
        start, end = folded.to_original(s, e)
        out.append((kind, start, end, placeholder))
    return out


def find_pii(text: str) -> tuple[PiiSpan, ...]:
    """The personal data in ``text``: non-overlapping spans of the original text, in order."""
    return tuple(PiiSpan(kind, s, e) for kind, s, e, _ in _detect(text))


def mask(text: str) -> MaskResult:
    """``text`` with its personal data replaced by placeholders (see the module doc)."""
    found = _detect(text)
    if not found:
        return MaskResult(text, ())
    out: list[str] = []
    at = 0
    for _, start, end, placeholder in found:
        out.append(text[at:start])
        out.append(placeholder)
        at = end
    out.append(text[at:])
    return MaskResult("".join(out), tuple(PiiSpan(k, s, e) for k, s, e, _ in found))
