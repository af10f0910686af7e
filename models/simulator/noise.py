"""How real people's writing departs from clean text: typos, dialect, punctuation, scripts.

These functions are applied to the reporter's own words, never to the address the generator
inserts afterwards (its names must stay exact: they are what the unit is decided from), and
never change a manhole cover's marking. Traditional characters are the exception: someone
who types in traditional script does so for the address too, so ``to_traditional`` is meant
for the finished text.
"""

from __future__ import annotations

import random

from models.simulator.grammar import pick

# Homophone and input-method slips that Chinese readers meet daily (在/再, 的/得/地, 拉圾...).
_SLIPS: tuple[tuple[str, str], ...] = (
    ("在", "再"),
    ("再", "在"),
    ("的", "得"),
    ("得", "的"),
    ("地", "的"),
    ("已经", "以经"),
    ("垃圾", "拉圾"),
    ("噪音", "燥音"),
    ("暖气", "暖器"),
    ("暖气", "暧气"),
    ("反映", "反应"),
    ("处理", "处里"),
    ("那里", "哪里"),
    ("那", "哪"),
    ("像", "象"),
    ("做", "作"),
    ("安装", "按装"),
    ("一直", "一只"),
    ("路灯", "路等"),
    ("下水道", "下水到"),
    ("油烟", "有烟"),
    ("扰民", "绕民"),
    ("公园", "公元"),
    ("影响", "影像"),
    ("既然", "即然"),
    ("厉害", "利害"),
    ("反复", "反付"),
    ("清理", "清里"),
    ("修理", "休理"),
    ("停车", "听车"),
)

# Dialect and spoken forms (Shandong/Qingdao and general northern colloquial).
_DIALECT: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("我家", ("俺家", "俺们家")),
    ("我们", ("俺们", "咱们")),
    ("我", ("俺",)),
    ("怎么办", ("咋整", "咋办", "可咋整")),
    ("怎么", ("咋",)),
    ("什么", ("啥", "么")),
    ("这里", ("这块儿", "这旮旯", "这疙瘩")),
    ("那里", ("那块儿", "那旮旯")),
    ("这边", ("这块儿",)),
    ("那边", ("那块儿",)),
    ("很大", ("杠大", "老大了", "可大了")),
    ("很多", ("老多了", "老鼻子了", "杠多")),
    ("很脏", ("血脏", "杠脏", "埋汰")),
    ("很臭", ("杠臭", "血臭")),
    ("特别", ("杠", "老", "贼")),
    ("非常", ("杠", "老", "贼")),
    ("没有", ("没",)),
    ("一点", ("一点儿",)),
    ("孩子", ("小孩儿", "孩儿")),
    ("晚上", ("黑天", "晚上")),
    ("今天", ("今儿", "今天")),
    ("昨天", ("夜来", "昨儿")),
)
_TAIL_PARTICLES = ("嘛", "啊", "呀", "哈", "呢", "吧", "啊啊啊", "好吧", "")

# Internet and pinyin shorthand, English words typed on a phone.
_NETSPEAK: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("垃圾", ("laji", "lj")),
    ("政府", ("zf",)),
    ("物业", ("wy", "物yè")),
    ("有没有", ("有木有",)),
    ("什么", ("神马", "sm")),
    ("这样", ("酱紫",)),
    ("真的", ("zhen的", "真滴")),
    ("不知道", ("不造", "bzd")),
    ("谢谢", ("3q", "thx", "谢谢啦")),
    ("没人管", ("没人管？？？", "没人理")),
    ("麻烦", ("plz", "麻烦")),
)
_ENGLISH_TAILS = (
    "help!",
    "OK?",
    "plz",
    "无语.jpg",
    "emo了",
    "真的会谢",
    "破防了",
    "SOS",
    "ASAP",
    "yyds不了",
)

_EMOJI = ("😡", "😤", "😠", "🙄", "😓", "😭", "😩", "🤬", "🙏", "😷", "💢", "👎", "😅", "🆘", "😞")

_PUNCT_DROP = str.maketrans({"，": " ", "。": " ", "；": " ", "：": "", "、": " "})
_PUNCT_HALF = str.maketrans(
    {"，": ",", "。": ".", "！": "!", "？": "?", "：": ":", "（": "(", "）": ")"}
)

# A small simplified -> traditional table: enough for the characters these reports use.
_TRAD_PAIRS = (
    "区區 门門 这這 个個 们們 没沒 问問 题題 处處 东東 边邊 里裡 说說 电電 灯燈 楼樓 气氣 热熱 "
    "么麼 还還 请請 时時 来來 头頭 现現 长長 积積 脏髒 乱亂 尽盡 严嚴 响響 听聽 烟煙 广廣 场場 "
    "桥橋 师師 马馬 业業 报報 见見 觉覺 办辦 岛島 关關 车車 垃垃 圾圾 满滿 堆堆 扫掃 围圍 厂廠 "
    "盖蓋 坏壞 桶桶 园園 树樹 绿綠 路路 号號 街街 间間 声聲 噪噪 吵吵 杂雜 摊攤 卖賣 买買 贴貼 "
    "广廣 告告 罚罰 违違 规規 发發 现現 脑腦 让讓 应應 该該 环環 境境 卫衛 难難 过過 还還 给給 "
    "对對 欢歡 谁誰 该該 么麼 认認 为為 实實 经經 点點 钟鐘 几幾 岁歲 医醫 护護 险險 坏壞 亲親 "
    "导導 们們 领領 谢謝 复複 续續 务務 员員 剧劇 烧燒 烤烤 挂掛 线線 压壓 阀閥 网網 块塊 坏壞 "
    "飞飛 尘塵 渣渣 运運 输輸 开開 关關 总總 动動 静靜 窗窗 户戶 单單 梯梯 层層 楼樓 顶頂 违違 "
    "湾灣 沟溝 庄莊 镇鎮 县縣 市市 区區 岭嶺 苑苑 华華 兴興 宁寧 阳陽 龙龍 凤鳳 丰豐 汇匯 钱錢 "
    "带帶 样樣 种種 脚腳 觉覺 为為 从從 冲衝 晒曬 衣衣 挤擠 横橫 竖豎 转轉 轮輪 辆輛 摆擺 "
    "厕廁 着著 级級 费費 设設 众眾 记記 错錯 论論 结結 冻凍 温溫 节節 帮幫 鲜鮮 际際 价價 质質 "
    "资資 补補 划劃 损損 坏壞 维維 修修 灭滅 灾災 闻聞 处處 无無 电電 楼樓 梯梯 锁鎖 铁鐵 钢鋼 "
    "拆拆 违違 罚罰 执執 照照 证證 营營 饭飯 馆館 烧燒 盏盞 杆桿 标標 志誌 护護 栏欄 灯燈 "
    "树樹 枝枝 断斷 压壓 伤傷 险險 药藥 恶惡 脏髒 臭臭 气氣 风風 飘飄 扬揚 尘塵 运運 车車 "
)
_TRAD = str.maketrans(
    {pair[0]: pair[1] for pair in _TRAD_PAIRS.split() if len(pair) == 2 and pair[0] != pair[1]}
)


def to_traditional(text: str) -> str:
    return text.translate(_TRAD)


def slip(text: str, rng: random.Random, n: int = 1) -> str:
    """Up to ``n`` homophone or input-method slips."""
    for _ in range(n):
        wrong, right = _SLIPS[int(rng.random() * len(_SLIPS))]
        at = text.find(wrong)
        if wrong == "地":
            # Only the adverbial 地 after a doubled word (慢慢地, 哗哗地), not 地点/地面.
            at = next(
                (i for i in range(2, len(text)) if text[i] == "地" and text[i - 1] == text[i - 2]),
                -1,
            )
        if at != -1:
            text = text[:at] + right + text[at + len(wrong) :]
    return text


def dialect(text: str, rng: random.Random, strength: float = 0.5) -> str:
    for plain, spoken in _DIALECT:
        if plain in text and rng.random() < strength:
            text = text.replace(plain, pick(rng, spoken), 1)
    return text


def particle(rng: random.Random) -> str:
    return pick(rng, _TAIL_PARTICLES)


def netspeak(text: str, rng: random.Random) -> str:
    for plain, short in _NETSPEAK:
        if plain in text and rng.random() < 0.5:
            text = text.replace(plain, pick(rng, short), 1)
    if rng.random() < 0.4:
        text = f"{text} {pick(rng, _ENGLISH_TAILS)}"
    return text


def emoji(rng: random.Random, own: tuple[str, ...]) -> str:
    """One to three emoji, half of the time the problem's own (🗑️ for garbage, 🔥 for fire)."""
    count = 1 + int(rng.random() * 2.2)
    return "".join(
        pick(rng, own) if own and rng.random() < 0.5 else pick(rng, _EMOJI) for _ in range(count)
    )


def drop_punctuation(text: str) -> str:
    return " ".join(text.translate(_PUNCT_DROP).split())


def half_width(text: str) -> str:
    return text.translate(_PUNCT_HALF)


def shout(text: str, rng: random.Random) -> str:
    """End loudly: ！！！, ??? or ……"""
    end = pick(rng, ("！！！", "!!!", "！！", "？？？", "??", "……", "。。。", "！！！！"))
    return text.rstrip("。！？!?.， ") + end
