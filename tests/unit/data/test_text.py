from contracts.text import product_text


def test_product_text_renders_fields_in_order():
    product = {
        "title": "Grey Sofa",
        "brand": "Harlow",
        "attributes": [("color", "grey")],
        "features": ["Soft", ""],
        "description": None,
    }
    assert product_text(product) == "Grey Sofa"
    text = product_text(product, ("title", "brand", "attributes", "features", "description"))
    assert text == "Grey Sofa | brand: Harlow | attributes: color: grey | features: Soft"
    assert product_text({"title": "x", "attributes": {"size": "queen"}}, ("attributes",)) == (
        "attributes: size: queen"
    )
