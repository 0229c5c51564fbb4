"""Language detection from UTF-8 script ranges and stopword votes, for the classifier."""

from __future__ import annotations

import string
from collections.abc import Iterable

UNDETERMINED = "und"

# Stopwords are split into words on ASCII punctuation and digits; these non-ASCII marks are spaced first.
_WIDE_PUNCTUATION = "¿¡«»“”‘’„—–…。，、？！：；（）「」"
_WORD_SEPARATORS = bytes(ord(" ") if chr(b) in string.punctuation + string.digits else b for b in range(256))

# Common function words: frequent in running text of one language, rare in the others.
_STOPWORDS: dict[str, str] = {
    "en": (
        "the and of to is are was were be been that this these those with for from you your it its in on"
        " at have has had not what which who how why when where can could would should will my me we our"
        " they their there about an do does did if or but than then so just some any all also into because"
        " very don"
    ),
    "es": (
        "el la los las de del que y en un una unos por para con no es son se al lo como más pero sus su"
        " ya o este esta estos estas ser está están también muy hay qué cuál cómo porque cuando donde"
        " puedes podrías hacer tiene tengo sobre entre sin hola"
    ),
    "fr": (
        "le la les de des du et est une un que qui dans pour pas sur ne au aux avec ce cette ces il elle"
        " nous vous ils sont mais ou très été était avons avez peu plus leur comme faire quel quelle"
        " pourquoi comment je tu bonjour"
    ),
    "de": (
        "der die das und ist nicht ein eine einen zu den dem des mit von sich auf für auch es im sind wir"
        " ich du sie war sehr über haben hat oder aber wie wenn noch nach bei kann kannst welche dieser"
        " diese nur hallo"
    ),
    "it": (
        "il lo la gli le di che e è un una per non con del della dei delle sono anche ma come nel nella"
        " questo questa quale molto ho hai abbiamo perché quando dove più se cosa sulla alla ciao"
    ),
    "pt": (
        "o a os as de que e do da dos das em um uma para com não por mais se no na é você foi muito ao"
        " também estava isso esse essa qual como quando onde porque são nos seu sua olá"
    ),
    "nl": (
        "de het een en van is dat die niet op te zijn voor met ik je we er maar ook aan om wat hoe als"
        " bij kun heel welke deze twee wordt naar uit hebben heeft"
    ),
}


def _stopword_votes() -> dict[bytes, tuple[tuple[str, float], ...]]:
    """Each stopword's vote, shared among the languages that use it ("de" counts a quarter each)."""
    langs_of: dict[bytes, list[str]] = {}
    for lang, words in _STOPWORDS.items():
        for word in words.split():
            langs_of.setdefault(word.encode(), []).append(lang)
    return {word: tuple((lang, 1.0 / len(langs)) for lang in langs) for word, langs in langs_of.items()}


_STOPWORD_VOTES = _stopword_votes()
_STOPWORD_SET = frozenset(_STOPWORD_VOTES)
_LATIN_ORDER = tuple(_STOPWORDS)

# Letters with diacritics that point at one or a few Latin-script languages.
_ACCENT_HINTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ñ", ("es",)), ("¿", ("es",)), ("¡", ("es",)), ("ß", ("de",)), ("ä", ("de",)), ("ö", ("de",)),
    ("ü", ("de",)), ("ã", ("pt",)), ("õ", ("pt",)), ("ç", ("fr", "pt")), ("è", ("fr", "it")),
    ("ê", ("fr", "pt")), ("œ", ("fr",)), ("ù", ("fr", "it")), ("ì", ("it",)), ("ò", ("it",)),
)  # fmt: skip

# UTF-8 lead bytes name the script of a character; continuation bytes and ASCII non-letters are dropped.
_DROPPED_BYTES = bytes(b for b in range(256) if 0x80 <= b <= 0xBF or (b < 0x80 and not chr(b).isalpha()))
_SCRIPT_RANGES = (
    (range(0xC3, 0xCA), "l"),  # Latin-1 supplement and Latin extended letters
    (range(0xCE, 0xD0), "g"),  # Greek
    (range(0xD0, 0xD4), "c"),  # Cyrillic
    (range(0xD6, 0xD8), "h"),  # Hebrew
    (range(0xD8, 0xDC), "a"),  # Arabic
    (range(0xE0, 0xE1), "e"),  # Indic scripts and Thai, told apart by their second byte
    (range(0xE3, 0xE4), "j"),  # kana and CJK punctuation, told apart by their second byte
    (range(0xE4, 0xEA), "H"),  # CJK unified ideographs
    (range(0xEA, 0xEE), "k"),  # Hangul syllables
)


def _script_table() -> bytes:
    """A bytes.translate table from each byte to its script class ("o" for other)."""
    table = bytearray(b"o" * 256)
    for byte in range(128):
        if chr(byte).isalpha():
            table[byte] = ord("l")
    for lead_bytes, script_class in _SCRIPT_RANGES:
        for byte in lead_bytes:
            table[byte] = ord(script_class)
    return bytes(table)


_SCRIPT_TABLE = _script_table()

# One syllabic or ideographic character carries about as much as three alphabetic letters.
_SYLLABIC_WEIGHT = 3
_MIN_SCRIPT_WEIGHT = 6
_MIN_LATIN_WORDS = 2


def text_words(lowered: str) -> list[bytes]:
    """The words of lower-cased text as UTF-8 bytes, split on whitespace, punctuation and digits."""
    if not lowered.isascii():
        for mark in _WIDE_PUNCTUATION:
            if mark in lowered:
                lowered = lowered.replace(mark, " ")
    return lowered.encode("utf-8", "surrogatepass").translate(_WORD_SEPARATORS).split()


def _script_weights(lowered: str) -> dict[str, int]:
    """Weighted letter counts per script of non-ASCII text."""
    # Lone surrogates (possible in a str, never on the wire) would pass for Hangul lead bytes; drop them.
    data = lowered.encode("utf-8", "ignore")
    classes = data.translate(_SCRIPT_TABLE, _DROPPED_BYTES)
    weights = {
        "latin": classes.count(b"l"),
        "greek": classes.count(b"g"),
        "cyrillic": classes.count(b"c"),
        "hebrew": classes.count(b"h"),
        "arabic": classes.count(b"a"),
        "han": classes.count(b"H") * _SYLLABIC_WEIGHT,
        "hangul": classes.count(b"k") * _SYLLABIC_WEIGHT,
    }
    if b"j" in classes:
        kana = data.count(b"\xe3\x81") + data.count(b"\xe3\x82") + data.count(b"\xe3\x83")
        weights["kana"] = kana * _SYLLABIC_WEIGHT
    if b"e" in classes:
        weights["devanagari"] = data.count(b"\xe0\xa4") + data.count(b"\xe0\xa5")
        weights["thai"] = data.count(b"\xe0\xb8") + data.count(b"\xe0\xb9")
    return weights


def _language_of_script(script: str, lowered: str) -> str:
    """The language a non-Latin dominant script stands for."""
    if script == "cyrillic":
        ukrainian = any(ch in lowered for ch in "іїєґ") and not any(ch in lowered for ch in "ыэъ")
        return "uk" if ukrainian else "ru"
    return {"greek": "el", "hebrew": "he", "arabic": "ar", "hangul": "ko", "devanagari": "hi", "thai": "th"}[
        script
    ]


def _latin_language(lowered: str, words: Iterable[bytes], accents: bool) -> str:
    """Stopword vote (plus accent hints) among the Latin-script languages."""
    scores = dict.fromkeys(_LATIN_ORDER, 0.0)
    distinct = words if isinstance(words, (set, frozenset)) else frozenset(words)
    for word in sorted(_STOPWORD_SET & distinct):
        for lang, vote in _STOPWORD_VOTES[word]:
            scores[lang] += vote
    if not any(scores.values()) or len(distinct) < _MIN_LATIN_WORDS:
        return UNDETERMINED
    if accents:
        for mark, langs in _ACCENT_HINTS:
            if mark in lowered:
                for lang in langs:
                    scores[lang] += 1.0 / len(langs)
    return max(_LATIN_ORDER, key=scores.__getitem__)


def detect_language(text: str, words: Iterable[bytes] | None = None) -> str:
    """ISO 639-1 code of the dominant language of `text`, or "und" when there is too little to tell.

    `words` may pass text_words(text.lower()) (a set is fine) when the caller already has it.
    """
    lowered = text.lower()
    if words is None:
        words = text_words(lowered)
    if lowered.isascii():
        return _latin_language(lowered, words, accents=False)
    weights = _script_weights(lowered)
    kana = weights.pop("kana", 0)
    han = weights.pop("han")
    weights["cjk"] = han + kana
    script = max(weights, key=weights.__getitem__)
    if weights[script] < _MIN_SCRIPT_WEIGHT:
        return UNDETERMINED
    if script == "latin":
        return _latin_language(lowered, words, accents=True)
    if script == "cjk":
        # Japanese mixes kana into its kanji; Chinese text has none.
        return "ja" if kana * 10 >= han + kana else "zh"
    return _language_of_script(script, lowered)
