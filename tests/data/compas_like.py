"""A small synthetic table shaped like ProPublica's COMPAS two-year file: the same column
names and value shapes (names, birth dates, jail timestamps, charges, recidivism outcome
columns), generated offline. Real COMPAS cannot be downloaded in the tests.

The outcome `two_year_recid` depends on priors, age and juvenile counts (a model honestly
reaches ~65-75%); `is_recid`, `r_*`, `vr_*`, `event` and `end` record it (leaks), and
`residence` holds street addresses under a name that says nothing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FIRST = ["miguel", "kevon", "ed", "marsha", "edward", "steven", "elizabeth", "bo", "ellyaher",
         "laura", "adam", "andre", "michael", "john", "david", "maria", "jose", "james",
         "robert", "william", "latoya", "tiffany", "shanice", "deandre", "carlos", "luis",
         "jennifer", "jessica", "christopher", "anthony", "brian", "kimberly", "angela",
         "rosa", "emily", "kayla", "tyrone", "juan", "pedro", "ashley"]  # fmt: skip
LAST = ["hernandez", "dixon", "philo", "miles", "riddle", "stewart", "grant", "bredlaw",
        "sanchez", "jones", "smith", "johnson", "williams", "brown", "garcia", "martinez",
        "rodriguez", "lopez", "gonzalez", "wilson", "anderson", "thomas", "taylor", "moore",
        "jackson", "martin", "lee", "perez", "thompson", "white", "harris", "clark",
        "lewis", "robinson", "walker", "young", "allen", "king", "wright", "scott",
        "torres", "nguyen", "hill", "flores", "green", "adams", "nelson", "baker",
        "hall", "rivera", "campbell", "mitchell", "carter", "roberts"]  # fmt: skip
STREETS = ["NW 5th Ave", "Main St", "Oak Street", "Sunrise Blvd", "Las Olas Blvd",
           "Federal Hwy", "Pine Island Rd", "Broward Blvd", "Andrews Ave",
           "Commercial Blvd"]  # fmt: skip
CHARGES = ["Aggravated Assault w/Firearm", "Felony Battery w/Prior Convict", "Possession of "
           "Cocaine", "Battery", "Grand Theft in the 3rd Degree", "Driving While License "
           "Revoked", "Possession of Cannabis", "Petit Theft", "Burglary Unoccupied "
           "Dwelling", "Resist/Obstruct W/O Violence"]  # fmt: skip
RACES = ["African-American", "Caucasian", "Hispanic", "Other", "Asian", "Native American"]


def compas_like(n: int = 1000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    first = rng.choice(FIRST, n)
    last = rng.choice(LAST, n)
    screening = pd.Timestamp("2013-01-01") + pd.to_timedelta(rng.integers(0, 730, n), "D")
    age = rng.integers(18, 70, n)
    dob = screening - pd.to_timedelta(age * 365 + rng.integers(0, 365, n), "D")
    priors = rng.poisson(2.5, n)
    juv = rng.poisson(0.2, n)
    logit = 0.25 * priors - 0.045 * (age - 35) + 0.5 * juv - 0.6
    two_year = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    # re-offended after the two years too: is_recid agrees with the target ~96% of the time
    is_recid = np.where(two_year == 1, 1, (rng.random(n) < 0.08).astype(int))
    violent = is_recid * (rng.random(n) < 0.25)
    decile = np.clip(np.round(1 + 9 / (1 + np.exp(-(logit + rng.normal(0, 1.2, n))))), 1, 10)
    jail_in = screening - pd.to_timedelta(rng.integers(0, 86400, n), "s")
    jail_out = jail_in + pd.to_timedelta(rng.integers(3600, 86400 * 20, n), "s")
    days_to_recid = np.where(two_year == 1, rng.integers(1, 730, n), rng.integers(730, 1200, n))
    r_offense = screening + pd.to_timedelta(days_to_recid, "D")
    recid_charge = rng.choice(CHARGES, n)
    return pd.DataFrame(
        {
            "id": rng.permutation(np.arange(1, 3 * n))[:n],
            "name": [f"{a} {b}" for a, b in zip(first, last, strict=True)],
            "first": first,
            "last": last,
            "compas_screening_date": screening.strftime("%Y-%m-%d"),
            "sex": rng.choice(["Male", "Female"], n, p=[0.8, 0.2]),
            "dob": dob.strftime("%Y-%m-%d"),
            "age": age,
            "age_cat": np.where(age < 25, "Less than 25",
                                np.where(age > 45, "Greater than 45", "25 - 45")),  # fmt: skip
            "race": rng.choice(RACES, n, p=[0.5, 0.34, 0.09, 0.05, 0.01, 0.01]),
            "residence": [f"{rng.integers(1, 9999)} {rng.choice(STREETS)}" for _ in range(n)],
            "juv_fel_count": juv,
            "decile_score": decile.astype(int),
            "juv_misd_count": rng.poisson(0.1, n),
            "priors_count": priors,
            "c_jail_in": jail_in.strftime("%Y-%m-%d %H:%M:%S"),
            "c_jail_out": jail_out.strftime("%Y-%m-%d %H:%M:%S"),
            "c_charge_degree": rng.choice(["F", "M"], n, p=[0.65, 0.35]),
            "c_charge_desc": rng.choice(CHARGES, n),
            "is_recid": is_recid,
            "r_charge_degree": np.where(is_recid == 1, rng.choice(["(F3)", "(M1)", "(M2)"], n),
                                        None),  # fmt: skip
            "r_offense_date": np.where(is_recid == 1, r_offense.strftime("%Y-%m-%d"), None),
            "r_charge_desc": np.where(is_recid == 1, recid_charge, None),
            "is_violent_recid": violent,
            "vr_charge_degree": np.where(violent == 1, rng.choice(["(F2)", "(F3)"], n), None),
            "vr_offense_date": np.where(violent == 1, r_offense.strftime("%Y-%m-%d"), None),
            "vr_charge_desc": np.where(violent == 1, rng.choice(CHARGES, n), None),
            "score_text": np.where(decile >= 8, "High", np.where(decile >= 5, "Medium", "Low")),
            "end": days_to_recid,
            "event": np.where(rng.random(n) < 0.01, 1 - two_year, two_year),
            "two_year_recid": two_year,
        }
    )


PERSONAL = {"id", "name", "first", "last", "dob", "residence"}
"""The columns that identify a defendant."""
LEAKS = {"is_recid", "r_charge_degree", "r_offense_date", "r_charge_desc", "is_violent_recid",
         "vr_charge_degree", "vr_offense_date", "vr_charge_desc", "end", "event"}  # fmt: skip
"""The columns that record the outcome."""
