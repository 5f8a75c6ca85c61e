"""The packages whose `@register` lines fill the registry's tables: the built-in variant
families. Read only by the registry's loader (`registry._import_builtin_variants`), which imports
them by name on the first lookup; a new family is one line here."""

FAMILIES = (
    "encoders.attention",
    "encoders.connections",
    "encoders.ffn",
    "encoders.heads",
    "encoders.mixers",
    "encoders.moe",
    "encoders.norms",
    "encoders.position",
)
