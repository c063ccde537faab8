"""Regenerates the binary fixtures of tests/data (XLSX and Avro), which the
Rust tests cannot write themselves. Needs `pip install openpyxl fastavro`.

Every fixture holds the same dirty records as `formats.rs` expects: quoted
commas, quotes, newlines, unicode, empty fields, and a repeated key."""
import datetime
import pathlib

import fastavro
import openpyxl

HERE = pathlib.Path(__file__).parent
RECORDS = [
    {"email": "a@x.com", "name": 'Ann "the first", Jr.', "age": 30, "joined": datetime.date(2024, 1, 2)},
    {"email": "b@x.com", "name": "Bob\nline two", "age": None, "joined": datetime.date(2024, 2, 29)},
    {"email": "c@x.com", "name": "Zoë 北京 🚀", "age": 7, "joined": None},
    {"email": "a@x.com", "name": "Ann again", "age": 31, "joined": datetime.date(2024, 3, 1)},
]

book = openpyxl.Workbook()
cover = book.active
cover.title = "Cover"
cover["A1"] = "This sheet is not the data"
sheet = book.create_sheet("Contacts")
sheet.append(["email", "name", "age", "joined"])
for r in RECORDS:
    sheet.append([r["email"], r["name"], r["age"], r["joined"]])
book.save(HERE / "contacts.xlsx")

schema = {
    "type": "record",
    "name": "Contact",
    "fields": [
        {"name": "email", "type": "string"},
        {"name": "name", "type": ["null", "string"]},
        {"name": "age", "type": ["null", "long"]},
        {"name": "joined", "type": ["null", {"type": "int", "logicalType": "date"}]},
    ],
}
with open(HERE / "contacts.avro", "wb") as out:
    fastavro.writer(out, fastavro.parse_schema(schema), RECORDS)
