def document() -> dict: return {}
