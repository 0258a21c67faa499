"""Columns that hold a person's identity: names, birth dates, postal addresses, national
id numbers and per-row record ids, found by column name and by values, offline.

    find_personal_columns(df)
    # [{"column": "first", "kind": "person_name",
    #   "reason": "person name: column name 'first'"}, ...]

Why: a public criminal-justice table trained with its defendants' first and last names
and birth dates as category inputs, so the names and dates landed in the package (the
encoders' vocabularies) while the run printed "PII: none found". `foundry.data.scrub`
takes the columns found here as identifier columns (`data.pii.identifiers`: dropped by
default) before anything is fitted.

By name. Column names are normalised (accents stripped, camelCase split, case and
separators ignored: `Date_de_Naissance`, `dateOfBirth`, `FECHA-NACIMIENTO` all match) and
compared with hand-written lists in English, French, German, Spanish, Portuguese, Italian
and Dutch. Generic words (`name`, `first`, `last`, `nom`, `nombre`...) count only as the
whole column name and only when the values are words, not numbers (a stock table's `last`
price is not a surname). A name match is also refused for a low-cardinality column
(fewer than `MIN_DISTINCT` distinct values in `MIN_ROWS` rows or more): `address_type`
with values home / work is not an address.

By values, for columns whose name says nothing (no name list can be downloaded, so the
checks are shapes and checksums):
- full names: "Firstname Lastname" shapes (2-4 words of letters) whose words include
  common given names from a small built-in list, mostly distinct values;
- given names: single words, mostly from the same built-in list;
- birth dates: full dates (day precision) whose implied ages today are 0-120 years, adults
  on the median, spread over decades (an order date column spans a few years), in a
  column whose name does not say it is another date (`date`, `screening_date`: a
  30-year price history is no list of birthdays);
- addresses: a house number next to a street word ("12 Main St", "Hauptstraße 5",
  "rue de la Paix 3", "Keizersgracht 12");
- national ids: US SSN (123-45-6789), French NIR (mod-97 key), Dutch BSN (11-proof),
  Spanish DNI / NIE (check letter), Brazilian CPF (two mod-11 digits), Italian codice
  fiscale (shape), German Steuer-ID (ISO 7064 mod 11,10).
Surnames alone have no offline test: they are found by column name only.

Only a sample of `SAMPLE` values is read, and values longer than `MAX_VALUE_CHARS` are
skipped: every test is a bounded loop over tokens, linear in the value.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from datetime import date

import numpy as np
import pandas as pd

__all__ = ["KINDS", "column_tokens", "find_personal_columns"]

KINDS = {
    "person_name": "person name",
    "birth_date": "birth date",
    "address": "postal address",
    "national_id": "national id number",
    "record_id": "record id",
}
"""Kind -> words used in reports."""
SAMPLE = 2000
"""Values read per column (seeded sample of the non-missing ones)."""
MAX_VALUE_CHARS = 120
"""Longer values are free text, not a name, date, address or id: not tested."""
MIN_ROWS = 50
MIN_DISTINCT = 10
"""A name match is refused for a column with fewer distinct values than this among at
least `MIN_ROWS` non-missing rows (a code or a type, not people)."""
VALUE_SHARE = 0.8
"""Share of sampled values that must pass a value test (names, ids)."""
ADDRESS_SHARE = 0.6
"""...and for addresses, whose shapes vary more ("Apt 4, 12 Main St", "PO Box 9")."""

# ---------------------------------------------------------------- names of columns
# Compared after `_compact` (tokens joined, no separators). "suffix" entries also match at
# the end of a longer name (`patient_first_name`); "whole" ones only as the whole name.

_NAME_SUFFIX = {
    "firstname", "lastname", "givenname", "familyname", "fullname", "middlename",
    "maidenname", "surname", "surnames", "forename", "forenames", "personname",
    "prenom", "prenoms", "nomdefamille", "nomfamille", "nomdenaissance", "nomcomplet",
    "nomusage", "vorname", "vornamen", "nachname", "familienname", "geburtsname",
    "apellido", "apellidos", "primerapellido", "segundoapellido", "nombrecompleto",
    "sobrenome", "apelido", "nomecompleto", "primeironome", "ultimonome",
    "cognome", "nomecognome", "voornaam", "voornamen", "achternaam", "familienaam",
    "tussenvoegsel", "geslachtsnaam",
}  # fmt: skip
# `name` alone names a package, a product or a command as often as a person: the values
# decide (`_people_shaped`)
_GENERIC_NAME = {"name", "names", "nom", "nombre", "nome", "naam"}
_NAME_WHOLE = {"name", "names", "first", "last", "nom", "nombre", "nome", "naam", "fname",
               "lname", "fullnames"}  # fmt: skip
_PERSON_WORDS = {
    "patient", "customer", "client", "employee", "user", "person", "contact", "owner",
    "mother", "father", "spouse", "member", "applicant", "student", "defendant",
    "victim", "driver", "holder", "cardholder", "subscriber", "passenger", "guest",
    "cliente", "paciente", "usuario", "utilisateur", "kunde", "patientin", "klant",
    "utente", "aluno", "alumno", "eleve",
}  # fmt: skip
_BIRTH_SUFFIX = {
    "dob", "dateofbirth", "birthdate", "birthday", "birthdt", "datebirth",
    "datenaissance", "datedenaissance", "dtnaissance", "geburtsdatum", "geburtstag",
    "gebdatum", "fechanacimiento", "fechadenacimiento", "fnacimiento", "fechanac",
    "datanascimento", "datadenascimento", "dtnascimento", "datanascita", "datadinascita",
    "geboortedatum", "geboortedag",
}  # fmt: skip
# whole names only: `lieu_naissance` (place of birth) is not a date
_BIRTH_WHOLE = {"born", "birth", "bdate", "bday", "naissance", "nacimiento", "nascimento",
                "nascita", "geboorte", "geburt"}  # fmt: skip
_ADDRESS_TOKENS = {
    "address", "addresses", "addr", "street", "streetname", "housenumber", "adresse",
    "anschrift", "strasse", "strassenname", "hausnummer", "direccion", "domicilio",
    "calle", "endereco", "logradouro", "morada", "indirizzo", "straat", "straatnaam",
    "huisnummer", "adres",
}  # fmt: skip
# ip_address, email_address, mac_address, wallet_address... are not where someone lives
_NOT_POSTAL = {"ip", "ipv4", "ipv6", "email", "mail", "e", "mac", "web", "url", "wallet",
               "host", "server", "network", "memory", "hw", "ether", "bitcoin", "eth",
               "electronico", "electronique"}  # fmt: skip
_ID_SUFFIX = {
    "ssn", "socialsecuritynumber", "socialsecurityno", "socialsecurity",
    "nationalid", "nationalidnumber", "nationalinsurancenumber", "nino", "taxid",
    "passport", "passportnumber", "passportno", "idcardnumber", "nir", "numerosecu",
    "numerosecuritesociale", "nss", "insee", "steuerid", "steueridentifikationsnummer",
    "steuernummer", "sozialversicherungsnummer", "svnr", "ausweisnummer",
    "personalausweisnummer", "dni", "nie", "nif", "numeroseguridadsocial", "cpf",
    "codicefiscale", "bsn", "burgerservicenummer", "sofinummer", "personnummer", "pesel",
    "taxnumber", "taxidnumber", "aadhaar", "curp",
}  # fmt: skip
_RECORD_ID_WHOLE = {"id", "uuid", "guid"}
_EVENT_DATE_TOKENS = {"date", "dt", "time", "timestamp", "datetime", "day", "month",
                      "period", "datum", "fecha", "data", "jour", "tag", "dag", "giorno",
                      "dia", "created", "updated", "at", "on"}  # fmt: skip

# ---------------------------------------------------------------- values
# A hand-written list of common given names (en, fr, de, es, pt, it, nl): enough to tell a
# column of names from one of cities or products, not to recognise every name.
_GIVEN_NAMES_TEXT = """
    james john robert michael william david richard joseph thomas charles christopher
    daniel matthew anthony mark donald steven paul andrew joshua kevin brian george
    edward ronald timothy jason jeffrey ryan jacob gary nicholas eric jonathan stephen
    larry justin scott brandon benjamin samuel frank gregory raymond patrick jack dennis
    jerry tyler aaron henry peter adam walter nathan kyle carl arthur harold roger keith
    terry sean christian austin willie jesse ethan billy bruce bryan ralph roy jordan
    eugene wayne louis alan juan luis carlos jose miguel jorge pedro antonio manuel
    francisco javier rafael alejandro fernando ricardo sergio pablo diego andres mary
    patricia jennifer linda elizabeth barbara susan jessica sarah karen nancy lisa betty
    margaret sandra ashley kimberly emily donna michelle dorothy carol amanda melissa
    deborah stephanie rebecca sharon laura cynthia kathleen amy shirley angela helen
    anna brenda pamela nicole emma samantha katherine christine debra rachel catherine
    carolyn janet ruth maria heather diane virginia julie joyce victoria olivia kelly
    christina lauren joan evelyn judith megan cheryl andrea hannah martha jacqueline
    frances gloria ann teresa kathryn sara janice jean alice madison doris abigail julia
    judy grace denise amber marilyn beverly danielle theresa sophia marie diana brittany
    natalie isabella charlotte rose alexis kayla carmen rosa ana lucia sofia elena
    isabel pilar dolores mercedes josefa francesca giulia chiara alessandro marco
    giuseppe giovanni luca matteo lorenzo andrea paolo roberto jean pierre michel
    philippe alain nicolas francois jacques bernard christophe sebastien julien laurent
    olivier stephane thierry isabelle nathalie sylvie catherine sophie valerie celine
    claire camille manon chloe lea hans klaus jurgen wolfgang stefan andreas thomas uwe
    dieter gunter horst helmut ursula monika petra sabine gabriele renate karin heike
    birgit katrin jan pieter willem hendrik kees johannes sanne anouk femke lotte joao
    antonio francisco paulo mariana beatriz ines joana leonor rafaela tiago goncalo rui
    fabio
"""
GIVEN_NAMES = frozenset(_GIVEN_NAMES_TEXT.split())
_STREET_WORDS = {
    "street", "st", "avenue", "ave", "av", "road", "rd", "boulevard", "blvd", "lane",
    "ln", "drive", "dr", "way", "court", "ct", "place", "pl", "terrace", "highway", "hwy",
    "parkway", "pkwy", "circle", "cir", "square", "sq",
    "rue", "bd", "chemin", "allee", "impasse", "quai", "cours", "route",
    "strasse", "str", "weg", "platz", "gasse", "ring", "damm",
    "calle", "avenida", "avda", "plaza", "paseo", "camino", "carrera",
    "rua", "travessa", "largo", "praca", "alameda", "estrada",
    "via", "viale", "piazza", "corso", "vicolo", "piazzale",
    "straat", "laan", "plein", "gracht", "kade", "singel", "dreef", "steeg",
}  # fmt: skip
_STREET_ENDINGS = ("strasse", "str", "weg", "platz", "gasse", "straat", "laan", "plein",
                   "gracht", "kade", "singel", "dreef", "damm", "allee")  # fmt: skip
_WORD = re.compile(r"[^\W\d_]+(?:['\-.][^\W\d_]+)*\.?")
_DATE = re.compile(
    r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[ T][\d:.]+)?"
    r"|(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})(?:[ T][\d:.]+)?"
)
_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def column_tokens(name: object) -> list[str]:
    """`name` as lower-case ASCII word tokens: accents stripped, camelCase split, any
    separator a break ("Date_de_Naissance" -> [date, de, naissance], "dateOfBirth" ->
    [date, of, birth], "Straße" -> [strasse])."""
    text = unicodedata.normalize("NFKD", str(name).replace("ß", "ss").replace("ẞ", "SS"))
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    return re.findall(r"[a-z0-9]+", text.lower())


def _compact(tokens: Iterable[str]) -> str:
    return "".join(tokens)


def _match_name(name: object) -> tuple[str, bool] | None:
    """(kind, needs_word_values) when the column name alone marks personal data."""
    tokens = column_tokens(name)
    # "address_line_1", "street2": a trailing number does not change what a column is
    while len(tokens) > 1 and tokens[-1].isdigit():
        tokens = tokens[:-1]
    if not tokens:
        return None
    tails = [_compact(tokens[i:]) for i in range(len(tokens))]
    whole = tails[0]
    if whole in _NAME_WHOLE:
        return "person_name", True
    if any(t in _NAME_SUFFIX for t in tails):
        return "person_name", False
    if tokens[-1] in ("name", "names") and len(tokens) >= 2 and tokens[-2] in _PERSON_WORDS:
        return "person_name", False
    if tokens[0] in ("nom", "nombre", "nome", "naam") and set(tokens[1:]) & _PERSON_WORDS:
        return "person_name", False  # nom_client, nombre_del_paciente
    if whole in _BIRTH_WHOLE or any(t in _BIRTH_SUFFIX for t in tails):
        return "birth_date", False
    if any(t in _ID_SUFFIX for t in tails):
        return "national_id", False
    if set(tokens) & _ADDRESS_TOKENS and not set(tokens) & _NOT_POSTAL:
        return "address", True
    if whole in _RECORD_ID_WHOLE or (len(tokens) >= 2 and tokens[-1] in _RECORD_ID_WHOLE):
        return "record_id", False
    return None


def find_personal_columns(
    df: pd.DataFrame, *, skip: Iterable[object] = ()
) -> list[dict[str, str]]:
    """The columns of `df` (except `skip`) that hold personal data, in column order:
    `[{"column", "kind", "reason"}]`, kind one of `KINDS`. Reasons name the rule, never a
    value ("person name: column name 'first'", "birth date: dates spread over decades,
    implied ages 18-87 years")."""
    skipped = {str(c) for c in skip}
    found = []
    for column in df.columns:
        if str(column) in skipped:
            continue
        hit = _classify(column, df[column])
        if hit is not None:
            kind, why = hit
            found.append(
                {"column": str(column), "kind": kind, "reason": f"{KINDS[kind]}: {why}"}
            )
    return found


def _classify(column: object, col: pd.Series) -> tuple[str, str] | None:
    values = col.dropna()
    if len(values) == 0:
        return None
    sample = values if len(values) <= SAMPLE else values.sample(SAMPLE, random_state=0)
    if isinstance(sample.dtype, pd.CategoricalDtype):
        sample = sample.astype(object)
    by_name = _match_name(column)
    if by_name is not None:
        kind, needs_words = by_name
        generic = _compact(column_tokens(column)) in _GENERIC_NAME
        if _confirmed(kind, values, sample, needs_words) and (
            not generic or _people_shaped(sample.astype(str))
        ):
            return kind, f"column name '{column}'"
    # a column named as another date (`date`, `screening_date`, `fecha_pedido`) holds
    # that date: a 30-year price history is not a list of birthdays
    dated = bool(set(column_tokens(column)) & _EVENT_DATE_TOKENS)
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        return None if dated else _birth_dates(pd.Series(sample))
    if pd.api.types.is_integer_dtype(col.dtype):
        # the numeric ids (NIR, BSN, CPF, Steuer-ID) have 8 digits or more
        if (sample.abs() >= 10**7).mean() < VALUE_SHARE:
            return None
        return _national_ids(sample.astype(str))
    if pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype):
        return None
    strings = sample[sample.map(type).eq(str)]
    strings = strings[strings.str.len() <= MAX_VALUE_CHARS]
    if len(strings) < max(10, len(sample) // 2):
        return None
    # one vectorised look at the digits settles most columns: ids and addresses need
    # them, names do not have them
    digits = strings.str.contains(r"\d", regex=True).mean()
    words = strings.str.contains(r"[^\W\d_]{2}", regex=True).mean()
    # every national id is 8-16 letters and digits once its separators are gone (and
    # is no date: 2013-01-01 is 8 digits too)
    is_date = strings.str.fullmatch(_DATE.pattern)
    compact = strings.str.replace(r"[\s.\-/]", "", regex=True)
    id_shaped = (compact.str.fullmatch(r"[0-9A-Za-z]{8,16}") & ~is_date).mean()
    tests = [_national_ids] if digits >= VALUE_SHARE and id_shaped >= VALUE_SHARE else []
    tests += [] if dated else [_birth_dates]
    tests += [_addresses] if min(digits, words) >= ADDRESS_SHARE else []
    tests += [_person_names] if digits <= 1 - VALUE_SHARE else []
    for test in tests:
        hit = test(strings)
        if hit is not None:
            return hit
    return None


def _confirmed(kind: str, values: pd.Series, sample: pd.Series, needs_words: bool) -> bool:
    n_distinct = values.nunique()
    if len(values) >= MIN_ROWS and n_distinct < MIN_DISTINCT:
        return False  # a code or a type: `address_type` = home / work
    if kind == "record_id":
        # `id`, `patient_id` holding one value per row; a repeated id is a group, and
        # the existing identifier rules decide about it
        return len(values) >= MIN_ROWS and n_distinct / len(values) > 0.95
    if needs_words:
        strings = sample.astype(str)
        return strings.str.contains(r"[^\W\d_]{2}", regex=True).mean() >= VALUE_SHARE
    return True


def _people_shaped(strings: pd.Series) -> bool:
    """Whether a column called just `name` holds people's names: most values are one to
    four words of letters (`Ana Lopez`, `O'Neil`, `Smith-Jones`), and they are written
    capitalised or hold common given names. A package's, command's or product's name
    (`python3-foo`, `gcloud compute instances list`, `libssl-dev`, `grep`) is not, and
    stays an input: in such tables it is often the strongest text feature."""
    word = r"[^\W\d_]+(?:['.\-][^\W\d_]+)*\.?"
    shaped = strings.str.fullmatch(rf"{word}(?:[ ,]+{word}){{0,3}}")
    if shaped.mean() < VALUE_SHARE:
        return False
    capitalised = strings.str.match(r"[^\W\d_a-z]").mean()
    given = strings.map(lambda v: any(w.lower() in GIVEN_NAMES for w in _WORD.findall(v)))
    return bool(capitalised >= 0.5 or given.mean() >= 0.1)


def _distinct(strings: pd.Series) -> tuple[list[str], np.ndarray]:
    """The distinct values and how often each occurs: each is tested once."""
    counts = strings.value_counts()
    return counts.index.tolist(), counts.to_numpy()


def _share(strings: pd.Series, test) -> float:
    """The share of `strings` that pass `test`."""
    if len(strings) == 0:
        return 0.0
    values, counts = _distinct(strings)
    passed = np.fromiter((bool(test(v)) for v in values), dtype=bool, count=len(values))
    return float(counts[passed].sum() / len(strings))


def _pct(share: float) -> str:
    return f"{int(share * 100)}%"  # floor: 99.6% must not read as 100%


# ---------------------------------------------------------------- value tests


def _person_names(strings: pd.Series) -> tuple[str, str] | None:
    values, counts = _distinct(strings)
    if len(values) < MIN_DISTINCT:
        return None
    words = [_WORD.findall(v) for v in values]
    shaped = np.array([bool(w) and _only_words(v, w) for v, w in zip(values, words,
                                                                       strict=True)])  # fmt: skip
    n_shaped = counts[shaped].sum()
    if n_shaped < VALUE_SHARE * len(strings):
        return None
    given = np.array([any(t.lower().strip(".") in GIVEN_NAMES for t in w) for w in words])
    given_share = counts[shaped & given].sum() / n_shaped
    lengths = np.array([len(w) for w in words])[shaped]
    if np.median(np.repeat(lengths, counts[shaped])) == 1:
        # single words: a first-name column is mostly known given names
        if given_share >= 0.4:
            return "person_name", f"{_pct(given_share)} of values are common given names"
        return None
    if lengths.max() <= 4 and given_share >= 0.25 and len(values) / len(strings) >= 0.3:
        return "person_name", (
            f"{_pct(n_shaped / len(strings))} of values are 'Firstname Lastname' shapes "
            "with common given names"
        )
    return None


def _only_words(text: str, words: list[str]) -> bool:
    # the words, joined by spaces or commas, are the whole value ("Ana Lopez", "Lopez, Ana")
    return len(re.sub(r"[\s,]", "", text)) == sum(len(w) for w in words)


def _birth_dates(sample: pd.Series) -> tuple[str, str] | None:
    if pd.api.types.is_datetime64_any_dtype(sample.dtype):
        stamps = pd.Series(sample)
    else:
        parts = sample.str.fullmatch(_DATE.pattern)
        if parts.mean() < 0.9:
            return None
        stamps = pd.to_datetime(sample[parts], errors="coerce", format="mixed")
    stamps = stamps.dropna()
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_localize(None)
    if len(stamps) < MIN_DISTINCT or stamps.nunique() < MIN_DISTINCT:
        return None
    today = pd.Timestamp(date.today())
    ages = (today - stamps).dt.days.to_numpy() / 365.25
    years = stamps.dt.year.to_numpy()
    q1, q3 = np.percentile(years, [25, 75])
    # birth dates: nobody is born in the future or over 120 years ago, the people in a
    # table are mostly adults, and they were born over decades (order dates, admissions
    # and screenings span a few years, or lie in the future)
    if (
        np.mean((ages >= 0) & (ages <= 120)) >= 0.99
        and np.median(ages) >= 15
        and q3 - q1 >= 8
        and years.max() - years.min() >= 25
    ):
        lo, hi = np.percentile(ages, [1, 99]).astype(int)
        return "birth_date", f"dates spread over decades, implied ages {lo}-{hi} years"
    return None


def _addresses(strings: pd.Series) -> tuple[str, str] | None:
    share = _share(strings, _is_address)
    if share >= ADDRESS_SHARE:
        return "address", f"{_pct(share)} of values are street addresses (number + street)"
    return None


def _is_address(text: str) -> bool:
    # An address has words apart: "12 Main St". A file path or URL has none
    # ("shapes/square/12.png" names a street word and a number, but is no address).
    if not re.search(r"\w\s+\w", text):
        return False
    tokens = re.findall(r"\w+", text.lower())
    if not 2 <= len(tokens) <= 12:
        return False
    number = any(t[:1].isdigit() and len(t) <= 6 and t[:-1].isdigit() or t.isdigit()
                 for t in tokens)  # fmt: skip
    if not number:
        return False
    plain = [unicodedata.normalize("NFKD", t).encode("ascii", "ignore").decode() for t in tokens]
    return any(t in _STREET_WORDS or (len(t) > 5 and t.endswith(_STREET_ENDINGS)) for t in plain)


def _national_ids(strings: pd.Series) -> tuple[str, str] | None:
    for label, test in _ID_TESTS:
        share = _share(strings, test)
        if share >= VALUE_SHARE:
            return "national_id", f"{_pct(share)} of values are valid {label}s"
    return None


def _ssn(text: str) -> bool:
    m = re.fullmatch(r"(\d{3})-(\d{2})-(\d{4})", text.strip())
    # area 000, 666 and 900-999, group 00 and serial 0000 are never issued
    return bool(m) and m[1] not in ("000", "666") and m[1][0] != "9" and m[2] != "00" \
        and m[3] != "0000"  # fmt: skip


def _digits(text: str) -> str:
    return re.sub(r"[\s.\-/]", "", text.strip())


def _nir(text: str) -> bool:
    d = _digits(text)
    if not re.fullmatch(r"[12]\d{14}", d):
        return False
    return 97 - int(d[:13]) % 97 == int(d[13:])


def _bsn(text: str) -> bool:
    d = _digits(text)
    # 8 digits: a BSN stored as a number lost its leading zero; shorter numbers are counts
    if not re.fullmatch(r"\d{8,9}", d) or int(d) == 0:
        return False
    d = d.zfill(9)
    total = sum(int(c) * w for c, w in zip(d[:8], range(9, 1, -1), strict=True)) - int(d[8])
    return total % 11 == 0


def _dni(text: str) -> bool:
    d = _digits(text).upper()
    m = re.fullmatch(r"([XYZ]?)(\d{7,8})([A-Z])", d)
    if not m or (m[1] and len(m[2]) != 7) or (not m[1] and len(m[2]) != 8):
        return False
    number = int(str("XYZ".index(m[1])) + m[2]) if m[1] else int(m[2])
    return _DNI_LETTERS[number % 23] == m[3]


def _cpf(text: str) -> bool:
    d = _digits(text)
    if not re.fullmatch(r"\d{11}", d) or len(set(d)) == 1:
        return False
    for n in (9, 10):
        check = sum(int(c) * w for c, w in zip(d[:n], range(n + 1, 1, -1), strict=True))
        if (check * 10) % 11 % 10 != int(d[n]):
            return False
    return True


def _codice_fiscale(text: str) -> bool:
    # surname, name, year, month letter, day (+40 for women), town, check letter
    shape = r"[A-Z]{6}\d{2}[A-EHLMPR-T]\d{2}[A-Z]\d{3}[A-Z]"
    return bool(re.fullmatch(shape, text.strip().upper()))


def _steuer_id(text: str) -> bool:
    d = _digits(text)
    if not re.fullmatch(r"[1-9]\d{10}", d):
        return False
    product = 10
    for c in d[:10]:  # ISO 7064 MOD 11,10
        total = (int(c) + product) % 10 or 10
        product = (total * 2) % 11
    return (11 - product) % 10 == int(d[10])


_ID_TESTS = (
    ("US social security number", _ssn),
    ("French NIR", _nir),
    ("Spanish DNI / NIE", _dni),
    ("Brazilian CPF", _cpf),
    ("Italian codice fiscale", _codice_fiscale),
    ("German tax id", _steuer_id),
    ("Dutch BSN", _bsn),  # last: 1 in 11 random 9-digit numbers pass
)
