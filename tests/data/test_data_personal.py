"""Columns holding people's names, birth dates, addresses and national ids: found by name
(several languages) and by values, dropped by default, and said so in the report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from tests.data.compas_like import PERSONAL, compas_like
from tests.data.real_tables import real_tables

from foundry.config.schema import PIIConfig
from foundry.data.personal import column_tokens, find_personal_columns
from foundry.data.scrub import PIIScrubber, format_report

N = 300


def _kinds(df: pd.DataFrame) -> dict[str, str]:
    return {d["column"]: d["kind"] for d in find_personal_columns(df)}


def _words(rng, n: int = N) -> list[str]:
    return list(rng.choice(["alpha", "beta", "gamma", "delta", "omega", "sigma"] * 3, n))


# ------------------------------------------------------------------ by column name


def test_column_names_are_normalised():
    assert column_tokens("dateOfBirth") == ["date", "of", "birth"]
    assert column_tokens("Date_de_Naissance") == ["date", "de", "naissance"]
    assert column_tokens("FECHA-NACIMIENTO") == ["fecha", "nacimiento"]
    assert column_tokens("Straße") == ["strasse"]
    assert column_tokens("Prénom") == ["prenom"]
    assert column_tokens("patientID") == ["patient", "id"]


@pytest.mark.parametrize(
    "name, kind",
    [
        ("first", "person_name"), ("last", "person_name"), ("first_name", "person_name"),
        ("FirstName", "person_name"), ("Prénom", "person_name"), ("nom", "person_name"),
        ("Vorname", "person_name"), ("Nachname", "person_name"), ("nombre", "person_name"),
        ("apellidos", "person_name"), ("sobrenome", "person_name"),
        ("cognome", "person_name"), ("achternaam", "person_name"),
        ("patient_surname", "person_name"), ("customerName", "person_name"),
        ("nom_client", "person_name"),
        ("dob", "birth_date"), ("DOB", "birth_date"), ("birth_date", "birth_date"),
        ("Date de naissance", "birth_date"), ("geburtsdatum", "birth_date"),
        ("fecha_nacimiento", "birth_date"), ("data_de_nascimento", "birth_date"),
        ("data_di_nascita", "birth_date"), ("geboortedatum", "birth_date"),
        ("BirthDate", "birth_date"), ("born", "birth_date"),
        ("address", "address"), ("Adresse", "address"), ("anschrift", "address"),
        ("Straße", "address"), ("dirección", "address"), ("endereço", "address"),
        ("indirizzo", "address"), ("straat", "address"), ("address_line_1", "address"),
        ("ssn", "national_id"), ("NIR", "national_id"), ("steuer_id", "national_id"),
        ("dni", "national_id"), ("nif", "national_id"), ("cpf", "national_id"),
        ("codice_fiscale", "national_id"), ("bsn", "national_id"),
        ("passport_number", "national_id"),
        ("id", "record_id"), ("person_id", "record_id"),
    ],
)  # fmt: skip
def test_personal_columns_are_found_by_name(name, kind):
    rng = np.random.default_rng(0)
    # values that say nothing by themselves: only the name can find the column
    values = [f"v{i} {w}" for i, w in enumerate(_words(rng))]
    if name in ("nom", "nombre"):
        # `name` alone needs name-shaped values (capitalised words), not given names
        values = [f"{w.title()} {v.title()}" for w, v in zip(_words(rng), _words(rng), strict=True)]
    if kind == "record_id":
        values = list(rng.permutation(10 * N)[:N])
    assert _kinds(pd.DataFrame({name: values})) == {name: kind}


@pytest.mark.parametrize(
    "name, values",
    [
        ("product_name", None),  # a name, but not a person's
        ("ip_address", None),  # not where someone lives
        ("email_address", None),
        ("address_type", ["home", "work", "other"]),  # a type, not an address
        ("last", "numbers"),  # a stock table's last price
        ("nombre", ["a", "b"]),  # two values: a code
        ("user_id", "repeated"),  # a group key, not one row each
    ],
)
def test_names_that_look_personal_but_are_not(name, values):
    rng = np.random.default_rng(1)
    if values is None:
        col = [f"thing {w}" for w in _words(rng)]
    elif values == "numbers":
        col = list(rng.normal(100, 5, N).round(2))
    elif values == "repeated":
        col = list(rng.integers(0, 20, N))
    else:
        col = list(rng.choice(values, N))
    assert _kinds(pd.DataFrame({name: col})) == {}


# ------------------------------------------------------------------ by values


def _ssn(rng) -> str:
    return f"{rng.integers(1, 899):03d}-{rng.integers(1, 99):02d}-{rng.integers(1, 9999):04d}"


def _nir(rng) -> str:
    body = f"{rng.integers(1, 3)}{rng.integers(0, 10**12):012d}"
    return body + f"{97 - int(body) % 97:02d}"


def _bsn(rng) -> str:
    while True:
        d = f"{rng.integers(10**7, 10**9):09d}"
        weighted = sum(int(c) * w for c, w in zip(d[:8], range(9, 1, -1), strict=True))
        if (weighted - int(d[8])) % 11 == 0:
            return d


def _dni(rng) -> str:
    n = int(rng.integers(10**7, 10**8))
    return f"{n}{'TRWAGMYFPDXBNJZSQVHLCKE'[n % 23]}"


def _cpf(rng) -> str:
    d = [int(x) for x in rng.integers(0, 10, 9)]
    for n in (9, 10):
        d.append(sum(c * w for c, w in zip(d, range(n + 1, 1, -1), strict=False)) * 10 % 11 % 10)
    s = "".join(map(str, d))
    return f"{s[:3]}.{s[3:6]}.{s[6:9]}-{s[9:]}"


@pytest.mark.parametrize("make", [_ssn, _nir, _bsn, _dni, _cpf])
def test_national_ids_are_found_by_checksum(make):
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"ref": [make(rng) for _ in range(N)], "other": _words(rng)})
    assert _kinds(df) == {"ref": "national_id"}


def test_random_numbers_are_not_national_ids():
    rng = np.random.default_rng(3)
    df = pd.DataFrame(
        {
            "nine": [f"{x:09d}" for x in rng.integers(10**8, 10**9, N)],  # 1 in 11 is 11-proof
            "count": rng.integers(0, 50, N),
            "order": rng.integers(10**10, 10**11, N),
        }
    )
    assert _kinds(df) == {}


def test_full_names_and_given_names_are_found_by_values():
    rng = np.random.default_rng(4)
    given = ["Maria", "John", "Sophie", "Pierre", "Hans", "Lucia", "Sanne", "Joao", "Ana",
             "Giulia", "Jan", "Emma"]  # fmt: skip
    family = ["Garcia", "Dupont", "Müller", "Rossi", "de Vries", "Silva", "Okafor", "Tanaka"]
    df = pd.DataFrame(
        {
            "holder": [f"{rng.choice(given)} {chr(65 + i % 26)}. {rng.choice(family)}"
                       for i in range(N)],  # fmt: skip
            "who": list(rng.choice(given, N)),
            "city": list(rng.choice(["New York", "San Diego", "Los Angeles", "Le Mans"], N)),
            "product": [f"Model {w.title()}" for w in _words(rng)],
        }
    )
    assert _kinds(df) == {"holder": "person_name", "who": "person_name"}


def test_birth_dates_are_found_by_values_and_event_dates_are_not():
    rng = np.random.default_rng(5)
    today = pd.Timestamp.today().normalize()
    born = today - pd.to_timedelta(rng.integers(18 * 365, 85 * 365, N), "D")
    ordered = today - pd.to_timedelta(rng.integers(0, 3 * 365, N), "D")
    df = pd.DataFrame(
        {
            "d1": born.strftime("%Y-%m-%d"),
            "d2": born.strftime("%d/%m/%Y"),
            "d3": born,  # datetime64
            "ordered": ordered.strftime("%Y-%m-%d"),
            "due": (today + pd.to_timedelta(rng.integers(1, 30 * 365, N), "D")).strftime(
                "%Y-%m-%d"
            ),
        }
    )
    assert _kinds(df) == {"d1": "birth_date", "d2": "birth_date", "d3": "birth_date"}
    # the same spread under the name of another date: a long history, not birthdays
    history = pd.DataFrame({"Date": born.strftime("%Y-%m-%d"), "trade_date": born})
    assert _kinds(history) == {}


def test_street_addresses_are_found_by_values_in_several_languages():
    rng = np.random.default_rng(6)
    shapes = ["{n} Main St", "{n} rue de la Paix", "Hauptstraße {n}", "Calle Mayor {n}",
              "Rua Augusta {n}", "Via Roma {n}", "Keizersgracht {n}", "{n} Oak Avenue"]  # fmt: skip
    df = pd.DataFrame(
        {
            "home": [rng.choice(shapes).format(n=rng.integers(1, 999)) for _ in range(N)],
            "plan": [f"plan {rng.integers(1, 9)} basic" for _ in range(N)],
        }
    )
    assert _kinds(df) == {"home": "address"}


def test_file_paths_with_street_words_are_not_addresses():
    """An image folder's paths ("square/12.png", "circle/3.png") hold a street word and
    a number, but no words apart: not addresses (the shapes example trains on them)."""
    rng = np.random.default_rng(7)
    df = pd.DataFrame({"image": [f"data/shapes/{rng.choice(['square', 'circle'])}/"
                                 f"{rng.integers(0, 999)}.png" for _ in range(N)]})
    assert _kinds(df) == {}


def test_no_ordinary_column_of_the_projects_datasets_is_taken_as_personal(tmp_path):
    """The false-positive check: sklearn's bundled tables, penguins, the examples'."""
    for name, (df, target) in real_tables(tmp_path).items():
        assert find_personal_columns(df, skip=[target]) == [], name
        scrubber = PIIScrubber.fit(df, PIIConfig(), target=target)
        assert scrubber.identifier_columns == [], name


# ------------------------------------------------------------------ scrubbing and reports


def test_compas_like_table_personal_columns_are_dropped_and_reported():
    df = compas_like(n=400)
    scrubber = PIIScrubber.fit(df, PIIConfig(), target="two_year_recid")
    dropped = {d["column"] for d in scrubber.identifier_columns}
    assert dropped >= PERSONAL
    out, report = scrubber.scrub(df)
    assert not PERSONAL & set(out.columns)
    lines = format_report(report)
    # the defect: "PII: none found in 27 columns" while names and birth dates were kept
    assert not any("none found" in line for line in lines), lines
    assert any("'dob' dropped (birth date" in line for line in lines)
    assert any("'first' dropped (person name" in line for line in lines)


def test_a_column_the_user_keeps_is_kept_and_said_so():
    df = compas_like(n=400)
    config = PIIConfig(keep_columns=["last"])
    scrubber = PIIScrubber.fit(df, config, target="two_year_recid")
    out, report = scrubber.scrub(df)
    assert "last" in out.columns and "first" not in out.columns
    lines = format_report(report)
    kept = [line for line in lines if "'last'" in line]
    assert kept and "kept as an input" in kept[0] and "data.pii.keep_columns" in kept[0]
    # the decision survives the package round trip, and prediction input keeps it too
    again = PIIScrubber.from_state(scrubber.state_dict())
    assert "last" in again.transform(df).columns


def test_keep_columns_naming_an_absent_column_is_an_error():
    from foundry.errors import ConfigError

    with pytest.raises(ConfigError, match="data.pii.keep_columns: column 'surname'"):
        PIIScrubber.fit(compas_like(n=100), PIIConfig(keep_columns=["surname"]), target="sex")


def test_personal_detection_can_be_turned_off():
    df = compas_like(n=400)[["first", "last", "age", "two_year_recid"]]
    scrubber = PIIScrubber.fit(df, PIIConfig(personal=False), target="two_year_recid")
    assert scrubber.identifier_columns == []



def _names_of_things(rng) -> list[str]:
    stems = ["grep", "python3", "libssl", "golang", "git", "perl", "node", "xz", "zstd"]
    tails = ["", "-dev", "-doc", "5.36", "-utils", " commit", ".conf", "-perl", " list"]
    return [f"{rng.choice(stems)}{rng.choice(tails)}{i % 7 or ''}" for i in range(N)]


@pytest.mark.parametrize("column", ["name", "Name", "names", "nombre"])
def test_a_name_column_of_packages_or_commands_is_kept_as_an_input(column):
    # a manual page's or a package's `name` is the strongest text feature of such tables;
    # only people's names (by values, below) make a `name` column personal data
    rng = np.random.default_rng(2)
    df = pd.DataFrame({column: _names_of_things(rng), "section": rng.choice(["1", "8"], N)})
    assert _kinds(df) == {}
    scrubber = PIIScrubber.fit(df, PIIConfig(), target="section")
    assert scrubber.identifier_columns == []
    assert column in scrubber.transform(df).columns


SURNAMES = ["Garcia", "Smith", "Okafor", "Nguyen", "Muller", "Rossi", "O'Neil", "Smith-Jones"]


@pytest.mark.parametrize(
    "values",
    [
        lambda i: f"{['Maria', 'John', 'Ana'][i % 3]} {SURNAMES[i % 8]}{'abcdefghij'[i % 10]}",
        lambda i: f"{SURNAMES[i % 8]}{'abcdefghij'[i % 10]}",  # capitalised surnames
        lambda i: f"{['maria', 'john', 'ana', 'peter'][i % 4]} {'abcdefghij'[i % 10]}lopez",
    ],
)
def test_a_name_column_of_people_is_still_dropped(values):
    df = pd.DataFrame({"name": [values(i) for i in range(N)], "y": [i % 2 for i in range(N)]})
    scrubber = PIIScrubber.fit(df, PIIConfig(), target="y")
    assert [c["column"] for c in scrubber.identifier_columns] == ["name"]
    assert "name" not in scrubber.transform(df).columns
