"""Data hook for recipes/penguins*.toml: the Palmer penguins table as it comes (text columns, blanks).

The `palmerpenguins` package ships the CSV (pip install palmerpenguins; it is in dlrecipe's test extra). This is
what a hook looks like: a function of (the recipe's [data] table, the seed) returning a pandas DataFrame; dlrecipe
encodes it like any table file. To work from the CSV instead:
    python -c "import palmerpenguins; palmerpenguins.load_penguins().to_csv('penguins.csv', index=False)"
and set data.source = "penguins.csv".
"""


def load(data: dict, seed: int):
    try:
        from palmerpenguins import load_penguins
    except ImportError:
        raise ImportError("this recipe reads the table from the palmerpenguins package: pip install palmerpenguins")
    return load_penguins()  # 344 penguins: species, island, bill/flipper sizes, body mass, sex, year
