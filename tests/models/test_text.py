import pytest

from models.text import Segmenter, clean, mask_pii, normalize, read_word_list


class TestNormalize:
    def test_fullwidth_letters_and_digits_become_halfwidth(self):
        assert normalize("ＡＴＭ机吞卡，卡号尾号１２３４") == "ATM机吞卡，卡号尾号1234"

    def test_whitespace_runs_collapse_and_ends_are_trimmed(self):
        assert normalize("  客户称\t\t网点\u3000\u3000排队\n\n两小时  ") == "客户称 网点 排队 两小时"

    def test_repeated_punctuation_collapses(self):
        assert normalize("为什么！！！！到底怎么回事？？？？") == "为什么！到底怎么回事？"
        assert normalize("what???!!!") == "what?!"
        assert normalize("等了很久......还是没人") == "等了很久…还是没人"

    def test_chinese_punctuation_is_kept(self):
        assert normalize("你好，请问。") == "你好，请问。"

    def test_invisible_characters_are_dropped(self):
        assert normalize("\ufeff信用卡\u200b年费") == "信用卡年费"


class TestMaskPii:
    @pytest.mark.parametrize("raw,masked", [
        ("身份证号110105198806153427请核实", "身份证号11**************27请核实"),
        ("证件号码11010519880615342X", "证件号码11**************2X"),
        ("手机13912345678联系我", "手机139****5678联系我"),
        ("电话 139-1234-5678", "电话 139****5678"),
        ("+86 13912345678", "139****5678"),
        ("卡号6222021234567890123被盗刷", "卡号6222***********0123被盗刷"),
        ("卡号 6222 0212 3456 7890", "卡号 6222********7890"),
        ("座机010-62345678转", "座机010-****5678转"),
        ("邮箱zhang.san@example.com有回执", "邮箱z***@example.com有回执"),
    ])
    def test_identifiers_are_masked(self, raw, masked):
        assert mask_pii(raw) == masked

    @pytest.mark.parametrize("text", [
        "透支了30000元，利息1,234.56元",
        "2023年3月5日还款，2023-03-05到账",
        "流水号20230305，限额50000",
        "客服热线95588和400-820-8888都打不通",
        "卡号6222****1234，手机138****5678",
        "年化利率3.85%，期限36个月",
        "订单号12345678901",  # 11 digits not starting with 1[3-9]
    ])
    def test_amounts_dates_and_masked_numbers_stay(self, text):
        assert mask_pii(text) == text

    @pytest.mark.parametrize("raw,masked", [
        ("客户王小明反映其信用卡被盗刷", "客户王某某反映其信用卡被盗刷"),
        ("姓名：欧阳娜娜", "姓名：欧阳某某"),
        ("我叫李明，想咨询房贷", "我叫李某，想咨询房贷"),
        ("持卡人刘德华称未收到验证码", "持卡人刘某某称未收到验证码"),
        ("母亲陈秀英今年78岁", "母亲陈某某今年78岁"),
    ])
    def test_marked_personal_names_are_masked(self, raw, masked):
        assert mask_pii(raw) == masked

    @pytest.mark.parametrize("text", [
        "客户王先生来电", "客户王小姐称", "我是王府井支行的客户", "客户张家口分行开户", "本人于去年在网点办理",
        "客户于今日来电", "客户高度怀疑是诈骗", "本人向法院起诉", "客户某某反映", "本人王某某",
    ])
    def test_phrases_that_only_look_like_names_stay(self, text):
        assert mask_pii(text) == text

    def test_fullwidth_digits_are_masked_after_normalisation(self):
        assert clean("手机１３９１２３４５６７８") == "手机139****5678"

    def test_clean_leaves_no_raw_identifier(self):
        text = clean("我叫王某，身份证110105198806153427，卡号6222021234567890123，电话13912345678")
        for raw in ("110105198806153427", "6222021234567890123", "13912345678"):
            assert raw not in text


class TestSegmenter:
    def test_banking_terms_stay_whole(self):
        tokens = Segmenter().cut(clean("申请个性化分期被拒，还被爆通讯录，年费也乱收"))
        for term in ("个性化分期", "爆通讯录", "年费"):
            assert term in tokens

    def test_stop_words_and_punctuation_are_dropped(self):
        tokens = Segmenter().cut("我的卡，被吞了！！")
        assert "的" not in tokens and "，" not in tokens and "！" not in tokens

    def test_english_is_lower_cased_words(self):
        tokens = Segmenter().cut("My Credit Card was charged TWICE")
        assert "credit" in tokens and "twice" in tokens and "was" not in tokens

    def test_jieba_and_rjieba_agree_on_dictionary_terms(self):
        text = "借记卡被盗刷，要求挂失补卡"
        for engine in ("jieba", "rjieba"):
            tokens = Segmenter(engine=engine).cut(text)
            assert "借记卡" in tokens and "被盗刷" in tokens and "补卡" in tokens

    def test_dictionary_file_with_bom_and_crlf(self, tmp_path):
        path = tmp_path / "dict.txt"
        path.write_bytes("\ufeff停息挂账 1000 n\r\n飞单 500 n\r\n".encode())
        words = read_word_list(path, "bank_userdict.txt")
        assert words == ["停息挂账 1000 n", "飞单 500 n"]
        tokens = Segmenter(userdict=words).cut("要求停息挂账，怀疑是飞单")
        assert "停息挂账" in tokens and "飞单" in tokens

    def test_unknown_engine_is_refused(self):
        with pytest.raises(ValueError, match="unknown segmenter"):
            Segmenter(engine="nope").cut("测试")

    def test_survives_pickling(self):
        import pickle

        seg = Segmenter()
        assert pickle.loads(pickle.dumps(seg)).cut("信用卡年费") == seg.cut("信用卡年费")
