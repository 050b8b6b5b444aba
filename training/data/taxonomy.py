"""The simulated catalog's vocabulary: product types in families, their substitutes and
complements, and the attribute values listings and shoppers use.

Everything here is data; ``training.data.rules`` turns it into grades and
``training.data.simulator`` into listings and queries. Indices into the tuples below
are what the simulator stores in its integer arrays, so order matters only within
one run (the seed fixes everything).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ProductType:
    name: str
    family: str
    synonyms: tuple[str, ...]
    # Which attribute vocabularies apply (keys of MATERIALS / SIZES).
    materials: str
    sizes: str
    price: tuple[int, int]  # typical price range in dollars, budget to luxury


FAMILIES = {
    "living_seating": "Living Room Seating",
    "living_tables": "Living Room Tables",
    "decor": "Decor & Textiles",
    "bedroom": "Bedroom Furniture",
    "bedding": "Bedding",
    "dining": "Dining",
    "lighting": "Lighting",
    "bath": "Bath",
    "office": "Home Office",
    "outdoor": "Outdoor",
}

TYPES: tuple[ProductType, ...] = (
    ProductType(
        "sofa", "living_seating", ("couch", "settee"), "upholstery", "seat_width", (300, 3000)
    ),
    ProductType(
        "loveseat",
        "living_seating",
        ("love seat", "small sofa"),
        "upholstery",
        "seat_width",
        (250, 1800),
    ),
    ProductType(
        "sectional",
        "living_seating",
        ("sectional sofa", "l shaped couch"),
        "upholstery",
        "seat_width",
        (600, 4500),
    ),
    ProductType(
        "accent chair",
        "living_seating",
        ("armchair", "club chair"),
        "upholstery",
        "generic",
        (120, 1200),
    ),
    ProductType(
        "recliner",
        "living_seating",
        ("recliner chair", "reclining chair"),
        "upholstery",
        "generic",
        (250, 1800),
    ),
    ProductType(
        "coffee table", "living_tables", ("cocktail table",), "wood", "table_width", (80, 1200)
    ),
    ProductType("end table", "living_tables", ("side table",), "wood", "generic", (40, 600)),
    ProductType(
        "console table",
        "living_tables",
        ("sofa table", "entryway table"),
        "wood",
        "table_width",
        (90, 900),
    ),
    ProductType(
        "tv stand",
        "living_tables",
        ("media console", "entertainment center"),
        "wood",
        "table_width",
        (100, 1500),
    ),
    ProductType(
        "sofa cover", "decor", ("slipcover", "couch cover"), "textile", "seat_width", (20, 150)
    ),
    ProductType(
        "throw pillow",
        "decor",
        ("accent pillow", "decorative pillow"),
        "textile",
        "count",
        (15, 120),
    ),
    ProductType("throw blanket", "decor", ("throw",), "textile", "generic", (20, 200)),
    ProductType("area rug", "decor", ("rug", "carpet"), "rug", "rug", (40, 1500)),
    ProductType("bed frame", "bedroom", ("platform bed", "bed"), "wood", "bed", (150, 2500)),
    ProductType("headboard", "bedroom", ("head board",), "upholstery", "bed", (80, 900)),
    ProductType(
        "nightstand", "bedroom", ("bedside table", "night stand"), "wood", "generic", (60, 700)
    ),
    ProductType("dresser", "bedroom", ("chest of drawers",), "wood", "table_width", (150, 2000)),
    ProductType("mattress", "bedding", ("memory foam mattress",), "foam", "bed", (200, 2500)),
    ProductType(
        "comforter set", "bedding", ("duvet set", "comforter"), "textile", "bed", (40, 400)
    ),
    ProductType("sheet set", "bedding", ("bed sheets",), "textile", "bed", (25, 300)),
    ProductType("mattress topper", "bedding", ("mattress pad",), "foam", "bed", (40, 400)),
    ProductType("dining table", "dining", ("kitchen table",), "wood", "table_width", (150, 2500)),
    ProductType("dining chair", "dining", ("kitchen chair",), "wood", "count", (60, 800)),
    ProductType("bar stool", "dining", ("counter stool",), "metal_wood", "count", (50, 600)),
    ProductType("sideboard", "dining", ("buffet", "credenza"), "wood", "table_width", (200, 2200)),
    ProductType("table lamp", "lighting", ("bedside lamp",), "lighting", "generic", (25, 400)),
    ProductType("floor lamp", "lighting", ("standing lamp",), "lighting", "generic", (40, 600)),
    ProductType(
        "chandelier", "lighting", ("hanging chandelier",), "lighting", "generic", (120, 2500)
    ),
    ProductType("pendant light", "lighting", ("hanging light",), "lighting", "generic", (40, 700)),
    ProductType("lamp shade", "lighting", ("lampshade",), "textile", "generic", (10, 120)),
    ProductType(
        "bathroom vanity",
        "bath",
        ("vanity cabinet", "bath vanity"),
        "bath_wood",
        "table_width",
        (250, 3000),
    ),
    ProductType(
        "vanity light",
        "bath",
        ("bath bar light", "bathroom light"),
        "lighting",
        "generic",
        (40, 500),
    ),
    ProductType(
        "bathroom faucet",
        "bath",
        ("sink faucet", "lavatory faucet"),
        "fixture",
        "generic",
        (40, 600),
    ),
    ProductType("shower curtain", "bath", ("bath curtain",), "textile", "generic", (15, 120)),
    ProductType("bath towel", "bath", ("towel set",), "textile", "count", (15, 150)),
    ProductType(
        "desk", "office", ("writing desk", "computer desk"), "metal_wood", "table_width", (90, 1500)
    ),
    ProductType(
        "office chair", "office", ("desk chair", "task chair"), "office", "generic", (80, 1200)
    ),
    ProductType("bookcase", "office", ("bookshelf", "book shelf"), "wood", "generic", (70, 1200)),
    ProductType(
        "patio dining set", "outdoor", ("outdoor dining set",), "outdoor", "count", (300, 3500)
    ),
    ProductType(
        "patio umbrella",
        "outdoor",
        ("market umbrella", "outdoor umbrella"),
        "textile",
        "generic",
        (50, 500),
    ),
    ProductType(
        "umbrella base", "outdoor", ("umbrella stand",), "metal_wood", "generic", (30, 250)
    ),
    ProductType("outdoor cushion", "outdoor", ("patio cushion",), "outdoor", "count", (20, 200)),
    ProductType("adirondack chair", "outdoor", ("muskoka chair",), "outdoor", "generic", (80, 700)),
)
TYPE_INDEX = {t.name: i for i, t in enumerate(TYPES)}

# Groups of types a shopper would accept instead of one another (ESCI "Substitute").
SUBSTITUTE_GROUPS: tuple[tuple[str, ...], ...] = (
    ("sofa", "loveseat", "sectional"),
    ("accent chair", "recliner"),
    ("end table", "nightstand"),
    ("console table", "sideboard", "tv stand"),
    ("dining chair", "bar stool"),
    ("table lamp", "floor lamp"),
    ("chandelier", "pendant light"),
    ("mattress", "mattress topper"),
)
# Pairs bought together (ESCI "Complement"); the relation is symmetric.
COMPLEMENT_PAIRS: tuple[tuple[str, str], ...] = (
    ("sofa", "sofa cover"),
    ("sofa", "throw pillow"),
    ("sofa", "coffee table"),
    ("sofa", "throw blanket"),
    ("loveseat", "sofa cover"),
    ("loveseat", "throw pillow"),
    ("sectional", "sofa cover"),
    ("sectional", "coffee table"),
    ("accent chair", "throw pillow"),
    ("accent chair", "end table"),
    ("recliner", "throw blanket"),
    ("coffee table", "area rug"),
    ("tv stand", "area rug"),
    ("bed frame", "headboard"),
    ("bed frame", "mattress"),
    ("bed frame", "nightstand"),
    ("mattress", "sheet set"),
    ("mattress", "comforter set"),
    ("nightstand", "table lamp"),
    ("dresser", "table lamp"),
    ("dining table", "dining chair"),
    ("dining table", "sideboard"),
    ("dining table", "chandelier"),
    ("table lamp", "lamp shade"),
    ("floor lamp", "lamp shade"),
    ("bathroom vanity", "vanity light"),
    ("bathroom vanity", "bathroom faucet"),
    ("shower curtain", "bath towel"),
    ("desk", "office chair"),
    ("desk", "bookcase"),
    ("patio dining set", "patio umbrella"),
    ("patio dining set", "outdoor cushion"),
    ("patio umbrella", "umbrella base"),
    ("adirondack chair", "outdoor cushion"),
)

# Type relations as a matrix the vectorised rules index: RELATION[query_type, product_type].
SAME, SUBSTITUTE, COMPLEMENT, UNRELATED = 0, 1, 2, 3


def _relations() -> np.ndarray:
    n = len(TYPES)
    rel = np.full((n, n), UNRELATED, dtype=np.int8)
    for group in SUBSTITUTE_GROUPS:
        for a in group:
            for b in group:
                rel[TYPE_INDEX[a], TYPE_INDEX[b]] = SUBSTITUTE
    for a, b in COMPLEMENT_PAIRS:
        rel[TYPE_INDEX[a], TYPE_INDEX[b]] = COMPLEMENT
        rel[TYPE_INDEX[b], TYPE_INDEX[a]] = COMPLEMENT
    np.fill_diagonal(rel, SAME)
    return rel


RELATION = _relations()

# Colors: canonical name, then the spellings listings and shoppers also use.
COLORS: tuple[tuple[str, ...], ...] = (
    ("grey", "gray", "gry"),
    ("black", "blk"),
    ("white", "wht"),
    ("beige", "tan"),
    ("navy", "navy blue", "nvy"),
    ("brown", "brn"),
    ("green", "sage green"),
    ("blue", "blu"),
    ("red", "burgundy"),
    ("ivory", "cream"),
    ("gold", "champagne gold"),
    ("pink", "blush pink"),
)
STYLES: tuple[tuple[str, ...], ...] = (
    ("modern", "contemporary"),
    ("mid-century modern", "mid century", "mcm"),
    ("farmhouse", "modern farmhouse"),
    ("industrial",),
    ("traditional", "classic"),
    ("coastal", "beach"),
    ("bohemian", "boho"),
    ("scandinavian", "nordic"),
    ("glam", "glamorous"),
    ("rustic",),
)
MATERIALS: dict[str, tuple[tuple[str, ...], ...]] = {
    "upholstery": (
        ("velvet",),
        ("linen", "linen blend"),
        ("leather", "genuine leather"),
        ("faux leather", "pu leather", "vegan leather"),
        ("microfiber",),
        ("boucle",),
    ),
    "wood": (
        ("solid wood",),
        ("oak",),
        ("walnut",),
        ("pine",),
        ("engineered wood", "mdf"),
        ("marble",),
        ("glass", "tempered glass"),
    ),
    "textile": (
        ("cotton", "100% cotton"),
        ("linen",),
        ("polyester", "poly"),
        ("wool",),
        ("velvet",),
        ("microfiber",),
    ),
    "rug": (("wool",), ("jute",), ("polypropylene", "poly"), ("cotton",), ("viscose",)),
    "foam": (("memory foam",), ("latex",), ("hybrid",), ("gel foam", "cooling gel")),
    "metal_wood": (
        ("metal",),
        ("solid wood",),
        ("walnut",),
        ("engineered wood", "mdf"),
        ("rattan",),
    ),
    "lighting": (("brass", "antique brass"), ("glass",), ("metal",), ("ceramic",), ("crystal",)),
    "bath_wood": (("solid wood",), ("engineered wood", "mdf"), ("marble",), ("quartz",)),
    "fixture": (
        ("chrome",),
        ("brushed nickel", "brushed nickel finish"),
        ("matte black",),
        ("brass", "polished brass"),
        ("stainless steel", "ss"),
    ),
    "office": (("mesh",), ("leather",), ("faux leather", "pu leather"), ("fabric",)),
    "outdoor": (
        ("teak",),
        ("aluminum", "aluminium"),
        ("wicker", "resin wicker"),
        ("acacia wood", "acacia"),
        ("olefin",),
    ),
}
# Sizes: (canonical, ways listings/shoppers write it).
SIZES: dict[str, tuple[tuple[str, ...], ...]] = {
    "seat_width": (
        ("72 inch", '72"', "72 in.", "72in"),
        ("84 inch", '84"', "84 in.", "84in"),
        ("96 inch", '96"', "96 in.", "96in"),
    ),
    "table_width": (
        ("36 inch", '36"', "36 in.", "36in"),
        ("48 inch", '48"', "48 in.", "48in"),
        ("60 inch", '60"', "60 in.", "60in"),
        ("72 inch", '72"', "72 in.", "72in"),
    ),
    "bed": (
        ("twin",),
        ("full", "double"),
        ("queen", "qn", "queen size"),
        ("king", "kg", "king size"),
        ("california king", "cal king"),
    ),
    "rug": (
        ("5x8", "5' x 8'", "5 x 8"),
        ("8x10", "8' x 10'", "8 x 10"),
        ("9x12", "9' x 12'", "9 x 12"),
        ("3x5", "3' x 5'", "3 x 5"),
    ),
    "count": (
        ("set of 2", "2 pack", "2-pack"),
        ("set of 4", "4 pack", "4-pack"),
        ("single", "1 piece"),
    ),
    "generic": (("small", "sm"), ("medium", "med"), ("large", "lg", "oversized")),
}


def _flatten(vocab: dict[str, tuple[tuple[str, ...], ...]]) -> tuple[tuple[str, ...], ...]:
    """One global list of values so products of any type share index space."""
    seen: dict[str, tuple[str, ...]] = {}
    for values in vocab.values():
        for spellings in values:
            seen.setdefault(spellings[0], spellings)
    return tuple(seen.values())


ALL_MATERIALS = _flatten(MATERIALS)
ALL_SIZES = _flatten(SIZES)
MATERIAL_INDEX = {m[0]: i for i, m in enumerate(ALL_MATERIALS)}
SIZE_INDEX = {s[0]: i for i, s in enumerate(ALL_SIZES)}
PRICE_BANDS = ("budget", "mid-range", "premium", "luxury")

# Attribute vocabularies by attribute name, in the order the rules check them.
ATTRIBUTES: dict[str, tuple[tuple[str, ...], ...]] = {
    "color": COLORS,
    "material": ALL_MATERIALS,
    "size": ALL_SIZES,
    "style": STYLES,
}

BRANDS: tuple[str, ...] = (
    "Ashford Home",
    "Brightwater",
    "Cedar & Pine",
    "Dunmore",
    "Elmridge",
    "Foxglove Living",
    "Greyson Co.",
    "Harlow",
    "Ironwood",
    "Juniper Lane",
    "Kestrel",
    "Larkspur",
    "Maple Row",
    "Northfield",
    "Oakhaven",
    "Pemberly",
    "Quill & Co",
    "Rosemont",
    "Sable House",
    "Thistle",
    "Umberto",
    "Valemont",
    "Willow Creek",
    "Yarrow",
    "Zephyr Outdoor",
    "Lumen & Co",
    "Aqualine",
    "Restwell",
    "Deskwise",
    "Hearthstone",
)

MARKETING_WORDS = (
    "Premium",
    "Luxury",
    "New",
    "Upgraded",
    "Best Seller",
    "2024 Edition",
    "Easy Assembly",
    "Heavy Duty",
    "Designer",
    "Modern Design",
    "Space Saving",
    "Free Shipping",
)
QUERY_SUFFIXES = (
    "for living room",
    "for small spaces",
    "for bedroom",
    "with storage",
    "on sale",
    "for apartment",
    "for kids room",
    "under 500",
    "near me",
    "best",
    "cheap",
    "sturdy",
)


def type_material_ids(t: ProductType) -> np.ndarray:
    return np.array([MATERIAL_INDEX[m[0]] for m in MATERIALS[t.materials]], dtype=np.int16)


def type_size_ids(t: ProductType) -> np.ndarray:
    return np.array([SIZE_INDEX[s[0]] for s in SIZES[t.sizes]], dtype=np.int16)


# How shoppers describe a type without naming it (the "hard" profile's paraphrase queries):
# most share no content word with the type's name or synonyms, and several share one with
# a different type ("table for a computer"), so a lexical matcher is often misled.
PARAPHRASES: dict[str, tuple[str, ...]] = {
    "sofa": ("three seater for the living room", "big comfy seat for the family"),
    "loveseat": ("two seater", "compact seating for two"),
    "sectional": ("corner seating unit", "modular seating with chaise"),
    "accent chair": ("single seat for reading", "statement seat for a corner"),
    "recliner": ("chair that leans back with footrest", "lounger with footrest"),
    "coffee table": ("low centre piece for the lounge", "low surface in front of the couch"),
    "end table": ("small surface beside the couch", "little stand for a drink"),
    "console table": ("narrow hallway surface", "slim piece behind the couch"),
    "tv stand": ("cabinet for the television", "unit to hold a flat screen"),
    "sofa cover": ("protector for the couch", "fitted couch protector"),
    "throw pillow": ("cushion for the couch", "square cushion"),
    "throw blanket": ("cozy layer for the couch", "knit blanket for snuggling"),
    "area rug": ("floor covering for the lounge", "soft floor covering"),
    "bed frame": ("base to hold a mattress", "slatted base for sleeping"),
    "headboard": ("panel behind the pillows", "wall panel over the pillows"),
    "nightstand": ("small cabinet next to the bed", "drawer unit by the pillows"),
    "dresser": ("clothes storage with drawers", "bedroom drawers unit"),
    "mattress": ("something to sleep on", "bed to sleep on"),
    "comforter set": ("warm quilt with shams", "duvet cover with pillowcases"),
    "sheet set": ("fitted and flat linens", "linens for the bed"),
    "mattress topper": ("extra cushioning layer for the bed", "soft layer on the bed"),
    "dining table": ("table to eat at", "surface for family meals"),
    "dining chair": ("seat for the kitchen", "seat to eat at"),
    "bar stool": ("tall seat for the kitchen island", "high seat for the island"),
    "sideboard": ("storage cabinet for dishes", "long cabinet for plates"),
    "table lamp": ("light for the desk", "reading light that sits on a surface"),
    "floor lamp": ("tall light for a corner", "upright reading light"),
    "chandelier": ("ceiling light with arms", "statement ceiling fixture"),
    "pendant light": ("ceiling fixture over the island", "light that hangs over the island"),
    "lamp shade": ("cover for a bulb", "replacement shade"),
    "bathroom vanity": ("sink cabinet", "cabinet under the basin"),
    "vanity light": ("light over the bathroom mirror", "fixture over the mirror"),
    "bathroom faucet": ("tap for the basin", "mixer tap"),
    "shower curtain": ("liner for the tub", "drape for the tub"),
    "bath towel": ("something to dry off after a shower", "soft drying cloth"),
    "desk": ("workstation for working from home", "table for a computer"),
    "office chair": ("ergonomic seat for working", "swivel seat with wheels"),
    "bookcase": ("shelving for novels", "tall shelving unit"),
    "patio dining set": ("table and chairs for the garden", "garden furniture for meals"),
    "patio umbrella": ("shade for the garden table", "parasol for the deck"),
    "umbrella base": ("weight to hold a parasol", "holder for a parasol"),
    "outdoor cushion": ("pad for garden seats", "weatherproof seat pad"),
    "adirondack chair": ("slatted wooden lawn seat", "lawn seat for the fire pit"),
}
