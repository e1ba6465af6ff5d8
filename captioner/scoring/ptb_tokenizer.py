"""coco-caption's PTB tokenization in Python, for machines without Java (the GPU machine).

coco-caption tokenizes captions with the Stanford PTBTokenizer (CoreNLP 3.4.1's PTBLexer, a JFlex
lexer run with -preserveLines -lowerCase), then drops punctuation tokens. This is a copy of the
lexer's rules that captions can meet, checked against the jar (tests/test_metrics.py: equal on
Flickr8k's 40,455 captions and on quotes, entities, symbols, abbreviations and Unicode), so that
scores do not depend on whether Java is installed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# Tokens coco-caption's PTBTokenizer drops after tokenizing. Its list spells brackets "-LRB-" but
# compares lower-cased text, so "-lrb-" and friends stay: we keep that quirk.
_PTB_PUNCTUATION = {"''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
_PTB_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "{": "-lcb-", "}": "-rcb-", "[": "-lsb-", "]": "-rsb-"}

# A Python copy of the Java tokenizer (CoreNLP 3.4.1's PTBLexer, a JFlex lexer), for machines
# without Java: its rules that captions can meet, checked against the jar (tests/test_metrics.py).
# Pieces of the rules, named as in its grammar:
_LETTER = (  # é, 日: \w less digits, _ and numbers that are symbols to Java (², ½, Ⅻ, ①), plus accents
    r"(?:[^\W\d_\xb2\xb3\xb9\xbc-\xbe\u2070\u2074-\u2079\u2080-\u2089\u2150-\u2182\u2185-\u2189"
    r"\u2460-\u24ff\u2776-\u2793\u3007\u3021-\u3029\u3038-\u303a]|[\xad\u02c2-\u02c5\u02d2-\u02df"
    r"\u02e5-\u02ff\u0300-\u036f])")
_ALNUM = rf"(?:{_LETTER}|\d)"
_APOS = r"(?:['\u0092\u2019]|&apos;)"
_APOSX = r"(?:['`\u0091\u0092\u2018\u2019\u201b]|&apos;)"  # also taken for an apostrophe in a word
_WORD = rf"{_LETTER}{_ALNUM}*(?:[.!?]{_LETTER}{_ALNUM}*)*"  # dog, café, also hi.there, wow!really
_THING = rf"(?:[dol]{_APOSX}{_ALNUM})?{_ALNUM}+(?:[-_\u058a\u2010\u2011](?:[dol]{_APOSX}{_ALNUM})?{_ALNUM}+)*"
_HTHING = r"[a-z0-9][a-z0-9.,\xad]*(?:-(?:[a-z](?:\.[a-z])+\.|[a-z0-9\xad]+))+"  # 3.5-inch, u.s.-made
_REDAUX = rf"{_APOS}(?:[msd]|re|ve|ll)"  # 's 'm 'd 're 've 'll
_SREDAUX = rf"n{_APOSX}t"
_URL_END = r'[^\s"<>|.!?(){},-]'
_SGML = (r"<(?:[!?][a-z-][^>\n]*|/[a-z][\w:.-]*"
         r"|[a-z][\w:.-]*(?: +[a-z][\w:.-]*(?: *= *(?:'[^'\n]*'|\"[^\"\n]*\"|[a-z][\w:.-]*))?)* */?) *>")
_ABBREV1 = "|".join((  # keep their period
    r"jan|feb|mar|apr|jun|jul|aug|sept?|oct|nov|dec|mon|tues?|wed|thu|thurs|fri",
    r"ala|ariz|calif|colo|conn|ct|dak|fla|ga|ind|kans?|ky|md|mich|minn|mo|mont|neb|nev|okla|penn",
    r"tenn|va|vt|wisc?|wyo|(?-i:A)z|(?-i:A)rk|(?-i:D)el|(?-i:I)ll|(?-i:L)a|(?-i:M)ass|(?-i:M)iss",
    r"(?-i:O)re|(?-i:P)a|(?-i:T)ex|(?-i:W)ash",  # (these only capitalized: "ill." is a word)
    r"inc|cos?|corp|pp?t[ye]s?|ltd|plc|rt|bancorp|bhd|assn|univ|intl|sys",
    r"(?:ed|ph)\.d|tel|est|ext|sq|jr|sr|bros|blvd|rd|esq|etc|al|seq"))
_ABBREV2 = "|".join((  # keep their period too, but lose to a longer word ("mr.x")
    r"mr|mrs|ms|drs?|profs?|sens?|reps?|attys?|lt|col|gen|messrs|govs?|adm|rev|maj|sgt|cpl|pvt|mt|ph|ft",
    r"capt|ste?|ave|pres|lieut|hon|brig|co?mdr|pfc|spc|supts?|det|vs|alex|wm|jos|cie|a\.k\.a|cf|treas",
    r"dept|invt|elec|natl|m[ft]g|[a-z](?:\.[a-z])*"))  # also one letter, and acronyms: u.s., p.m.
_SENTENCE_START = "|".join(f"(?-i:{word[0]}){word[1:]}" for word in (  # capitalized
    "About", "According", "Additionally", "After", "An", "A", "As", "At", "But", "Earlier", "He", "Her",
    "Here", "However", "If", "In", "It", "Last", "Many", "More", r"Mr\.", r"Ms\.", "Now", "Once", "One",
    "Other", "Our", "She", "Since", "So", "Some", "Such", "That", "The", "Then", "There", "These", "They",
    "This", "We", "When", "While", "What", "Yet", "You"))

# At each position the lexer takes the longest match of its rules (the first rule on a tie). Here
# they are in its order, for Python's `re`: case-insensitive as the lexer is, except in character
# classes (hence the (?-i:...)). Where a rule has groups, the first that matched is the token: the
# rest of the match is context, which counts in the length, as in Java, and is lexed again.
# The kind names how a token is rewritten (_PTB_REWRITE).
_PTB_RULES = [(re.compile(rule, re.IGNORECASE), kind) for rules, kind in (
    (rf"(can)not|('t)was|({_APOS}t)is|(gon|wan)na|(got)ta|(gim|lem)me", None),  # can not, gon na
    (r"c\+\+|[cf]#", None),
    (_SGML, "nbsp"),  # <unk>, <b>
    (r"&(?:md|mdash|ndash);|[\u0096\u0097\u2013-\u2015]", "drop"),  # dashes: Java's "--"
    (r"&amp;", "amp"),
    (r"&(?:ht|tl|ur|lr|qc|ql|qr|odq|cdq|#\d+);", None),  # &#39;
    (rf"({_WORD}){_REDAUX}", None),  # dog 's
    (rf"([a-z\xad]*(?-i:[A-MO-Za-mo-z])\xad*){_SREDAUX}", None),  # do n't, ca n't
    (_WORD.replace(_LETTER, rf"(?:{_LETTER}|&[aeiou](?:acute|grave|uml);)"), None),
    (rf"((?:{_ABBREV1})\.)[\s\S]{{2}}", None),  # inc. (and "inc.w" is "inc. w", but "inc.we" a word)
    ((rf"{_APOS}n{_APOS}?|[ldj]{_APOS}|dunkin{_APOS}|somethin{_APOS}|ol{_APOS}|{_APOS}em",  # 'n' ol'
      rf"(?-i:[A-HJ-XZn]){_APOSX}{_LETTER}{{2,}}",  # n'ts, X'mas (but x 'mas)
      rf"{_APOS}[2-9]0s|{_APOS}till?|{_APOS}cause|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l",
      rf"{_LETTER}+(?-i:[aeiouyAEIOUY]){_APOSX}(?-i:[aeiouA-Z]){_LETTER}*"), None),  # ma'am
    (rf"(y{_APOS}){_LETTER}", None),  # y' all
    (rf"https?://[^\s\"<>|()]+{_URL_END}", None),
    (rf"(?:www\.(?:[^\s\"<>|.!?(){{}},]+\.)+[a-z]{{2,4}}|(?:(?-i:[^\s\"`'<>|.!?(){{}},\x2c-\x5f$])+\.)+"
     rf"(?:com|net|org|edu))(?:/[^\s\"<>|()]+{_URL_END})?", None),  # www.x.com/y
    (r'(?:&lt;|<)?[a-z0-9][^\s"<>|(){}\xa0]*@(?:[^\s"<>|(){}.\xa0]+\.)*[^\s"<>|(){}.\xa0]+(?:&gt;|>)?',
     None),  # e-mail
    (rf"@[a-z_][a-z_0-9]*|#{_LETTER}+", None),  # @user, #tag
    (rf"({_REDAUX})[^a-z]", "quote"),
    (_SREDAUX, "quote"),
    (r"\d{1,2}[-/]\d{1,2}[-/]\d{2,4}", None),  # dates
    (r"[-+]?(?:\d*(?:[.:,\xad\u066b\u066c]\d+)+|\d+)", None),  # 3.5 1,000 5:30 -1 .5
    (r"[\u207a\u207b\u208a\u208b]?(?:[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+|[\u2080-\u2089]+)", None),
    (r"(?:\d{1,4}[- \xa0])?\d{1,4}(?:\\?/|\u2044)\d{1,4}", "nbsp"),  # 1/2, and "5 1/2" is one token
    (r"[\u00bc\u00bd\u00be\u2153-\u215e]", "fraction"),
    (rf"-(?:rrb|lrb|rcb|lcb|rsb|lsb)-|c\.d\.s|pro-|anti-|s&p-500|s&ls|cap{_APOS}n|c{_APOS}est", None),
    (r"[a-z0-9]+(?:-[a-z]+){0,2}(?:\\?/[a-z0-9]+(?:-[a-z]+){0,2}){1,2}", None),  # and/or, km/h
    (r"(?-i:[A-Z]*)\$|#", None),  # US$
    (r"[\u00a2-\u00a5\u0080\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1\uffe5\uffe6]", "currency"),
    (r"((?:ca|figs?|prop|nos?|art|bldg|pp|op)\.)\s?\d", None),  # no. 5, but no.
    (rf"([a-z])\.\s+(?:{_SENTENCE_START}|{_SGML})\s", None),  # "a. The": Java ends a sentence
    (rf"(?:{_ABBREV1}|{_ABBREV2})\.", None),  # inc., mr., u.s.
    (rf"({_APOS}\d\d)\s", None),  # '80
    (rf"({_WORD}\.)[,;:]", None),  # a word before ., keeps its period
    (r"(?:\(\d{3}\)[ \xa0]?|\d{3}[- \xa0.])\d{3}[- \xa0.]\d{4}", "paren"),  # phone numbers
    (r"([<>]?[:;=][-o*']?(?-i:[()DPdpO\\{@|\[\]]))[^a-z0-9]", "paren"),  # smileys: :-) :p
    (r"(?-i:[\^x=~<>]\.\[\^x=~<>]|[-^x=~<>']_[-^x=~<>']|\([-^x=~<>'][_.]?[-^x=~<>']\)"
     r"|\([\^x=~<>']-[\^x=~<>'`]\))", "paren"),  # ^_^ (^.^)
    (r"<<|>>", None),
    (r'"|&quot;', "quote"),
    (r"&lt;|&gt;", "bracket"),
    (r"-+", "dashes"),
    (r"\.{3,5}|(?:\.[ \xa0]){2,4}\.|\u2026", "drop"),  # ellipsis
    (r"@+|#+|_+|\*+|(?:\\\*){1,3}|[?!]+", None),  # !!! and ?! stay (the filter drops ! and ?)
    ((rf"({_HTHING}\.)[,;:]", _HTHING, rf"({_THING}\.)[,;:]", _THING), None),  # t-shirt, 1,000-foot
    (r"(?-i:[A-Z]+)(?:(?:&amp;|[+&])(?-i:[A-Z]+))+", "amp"),  # AT&T (capitals only)
    (r"('|&apos;)[a-z][^ \t\n\r\xa0]", "quote"),  # an opening quote
    (_REDAUX, "quote"),
    (rf"''|[`\u2018-\u201f\u0091-\u0094\u2039\u203a\u00ab\u00bb]{{1,2}}|{_APOS}", "quote"),
    (r"&nbsp;", "drop"),
    # any other symbol that Java knows is a token; what is left is dropped: spaces, and what Java
    # cannot tokenize (emoji, private-use and format characters, some punctuation)
    (r"[!-/:-@\[-`{-~\x80\xa1\xa3-\xa9\xac\xae-\xb4\xb6-\xb9\xbf\xd7\xf7\u037e\u0387\u0589\u05be\u05c0"
     r"\u05c3\u05c6\u05f3\u05f4\u0600-\u0603\u0606-\u060c\u0614\u061b\u061e\u061f\u066a\u066d\u06d4"
     r"\u0700-\u070d\u07f6-\u07f8\u0964\u0965\u0e3f\u0e4f\u1fbd\u2016\u2017\u201a\u201e-\u2023\u2030-\u2038"
     r"\u203b\u203e-\u2042\u2044\u2070\u2074-\u207e\u2080-\u208e\u20a0\u20a4\u20ac\u2100-\u214f\u2155-\u215e"
     r"\u2190-\u2bff\u3001\u3002\u3012\u30fb\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65\uffe0\uffe1"
     r"\uffe5\uffe6]", None),
) for rule in ((rules,) if isinstance(rules, str) else rules)]
_PTB_QUOTES = str.maketrans({  # Java's "LaTeX quotes": most become `` '' ` ', which the filter drops
    "\u0091": "`", "\u2018": "`", "\u201b": "`", "\u2039": "`", "\u0092": "'", "\u2019": "'",
    "\u203a": "'", '"': "''", "\u0093": "``", "\u201c": "``", "\u00ab": "``", "\u0094": "''",
    "\u201d": "''", "\u00bb": "''"})
_PTB_REWRITE = {
    "drop": lambda t: "",
    "amp": lambda t: re.sub("(?i)&amp;", "&", t),
    "quote": lambda t: t.translate(_PTB_QUOTES).replace("&apos;", "'").replace("&quot;", "''"),
    "nbsp": lambda t: t.replace(" ", "\xa0"),  # Java keeps the token whole: "5\xa01/2"
    "paren": lambda t: t.replace(" ", "\xa0").replace("(", "-LRB-").replace(")", "-RRB-"),
    "bracket": lambda t: "<" if t[1] in "lL" else ">",
    "dashes": lambda t: "--" if 3 <= len(t) <= 4 else t,
    "fraction": lambda t: {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3",
                           "\u2154": "2/3"}.get(t, t),
    "currency": lambda t: {"\u00a2": "cents", "\u00a3": "#", "\u00a4": "$", "\u0080": "$", "\u20a0": "$",
                           "\u20ac": "$"}.get(t, t)}
# A shortcut, for speed: a word of plain letters before a space is a token, as no rule matches
# more there, unless it is one that Java splits.
_PTB_PLAIN_WORD = re.compile(r"[a-z]+(?=[ \n])", re.IGNORECASE)
_PTB_ASSIMILATIONS = {"cannot", "gonna", "gotta", "wanna", "gimme", "lemme"}


def _ptb_tokens(line: str, next_line: str | None) -> list[str]:
    """The Java lexer's tokens of one line (before lower-casing and the punctuation filter). Java
    lexes its whole input file at once, and a few rules look past the end of a line into the next
    one (`next_line`, None for the last line, which has no line break)."""
    text = line if next_line is None else f"{line}\n{next_line}"
    tokens, pos = [], 0
    while pos < len(line):
        if text[pos].isspace():  # no rule starts with a space
            pos += 1
            continue
        plain = _PTB_PLAIN_WORD.match(text, pos)
        if plain and plain.group().lower() not in _PTB_ASSIMILATIONS:
            tokens.append(plain.group())
            pos = plain.end()
            continue
        best, best_kind = None, None
        for rule, kind in _PTB_RULES:
            found = rule.match(text, pos)
            if found and (best is None or found.end() > best.end()):
                best, best_kind = found, kind
        if best is None:  # untokenizable: dropped, as Java does
            pos += 1
            continue
        token = next((g for g in best.groups() if g is not None), best.group())
        pos += len(token)
        rewrite = _PTB_REWRITE.get(best_kind)
        tokens.append(rewrite(token) if rewrite else token)
    return tokens


def simple_ptb_tokenize(text: str, next_text: str | None = "") -> str:
    """The PTB tokenizer's output without Java (tested where Java is installed: equal on Flickr8k's
    40,455 captions and on the hard cases in tests/test_metrics.py).

    `next_text`: the caption after this one in Java's input, None if it is the last. It matters
    rarely: "the letter b." is "the letter b" before "A dog ..." and "... no." before "1 ...".
    """
    following = None if next_text is None else " ".join(next_text.splitlines())
    tokens = (_PTB_BRACKETS.get(t, t).lower().replace("\xad", "")  # (Java drops soft hyphens)
              for t in _ptb_tokens(" ".join(text.splitlines()), following))
    return " ".join(t for t in tokens if t and t not in _PTB_PUNCTUATION)


def simple_ptb_tokenize_all(sentences: Sequence[str]) -> list[str]:
    """`coco_metrics.java_ptb_tokenize` in Python: the same output of the sentences as one input
    file, one per line."""
    return [simple_ptb_tokenize(s, n) for s, n in zip(sentences, [*sentences[1:], None], strict=True)]
