"""Airflow's own look for the plugin's pages: the fonts and colours its React UI sets, light and dark.

The values are those of Airflow 3.3's UI (``airflow/ui/dist``: its Chakra UI theme): the colour tokens in
oklch, the semantic tokens it builds on them (``bg`` white / ``black``, ``fg`` ``black`` / ``gray.50``,
``border`` ``gray.200`` / ``gray.800``, ``fg.muted`` ``gray.600`` / ``gray.400``; a state's ``solid`` is its
palette's 600, its ``subtle`` background 100 / 900, its ``fg`` 800 / 200) and the font stacks (``Inter`` first,
then the system UI fonts; ``SFMono-Regular`` ... for code). Airflow overrides ``black`` with a deep blue-grey.

The pages follow the mode Airflow's UI chose (it keeps it in ``localStorage["theme"]``, ``light``, ``dark`` or
``system``, and puts the class ``light`` / ``dark`` on ``<html>``; the plugin's pages are served from the same
origin, so they read the same choice), else the system's ``prefers-color-scheme``. Nothing is fetched: the CSS
is inline and the fonts are the ones the browser has.
"""

from __future__ import annotations

# Airflow 3.3.2's palette (airflow/ui/dist/assets/index-*.js, ``tokens.colors``): the steps the pages use.
PALETTE = {
    "black": "oklch(0.23185 0.0323 266.44)",
    "white": "#ffffff",
    "gray.50": "oklch(0.985 0.004 253)",
    "gray.100": "oklch(0.955 0.006 253)",
    "gray.200": "oklch(0.915 0.01 253)",
    "gray.300": "oklch(0.85 0.016 253)",
    "gray.400": "oklch(0.75 0.025 252)",
    "gray.600": "oklch(0.45 0.055 251)",
    "gray.700": "oklch(0.35 0.045 251)",
    "gray.800": "oklch(0.28 0.035 251)",
    "gray.900": "oklch(0.18 0.03 251)",
    "gray.950": "oklch(0.11 0.025 251)",
    "brand.200": "oklch(0.923 0.023 255.082)",
    "brand.600": "oklch(0.469 0.084 257.657)",
    "green.100": "oklch(0.962 0.044 156.743)",
    "green.200": "oklch(0.925 0.084 155.995)",
    "green.600": "oklch(0.47 0.20 149.0)",
    "green.800": "oklch(0.448 0.119 151.328)",
    "green.900": "oklch(0.393 0.095 152.535)",
    "red.100": "oklch(0.936 0.032 17.717)",
    "red.200": "oklch(0.885 0.062 18.334)",
    "red.600": "oklch(0.577 0.245 27.325)",
    "red.800": "oklch(0.444 0.177 26.899)",
    "red.900": "oklch(0.396 0.141 25.723)",
    "amber.100": "oklch(0.962 0.059 95.617)",
    "amber.200": "oklch(0.924 0.12 95.746)",
    "amber.600": "oklch(0.666 0.179 58.318)",
    "amber.800": "oklch(0.473 0.137 46.201)",
    "amber.900": "oklch(0.414 0.112 45.904)",
    "cyan.100": "oklch(0.956 0.045 203.388)",
    "cyan.200": "oklch(0.917 0.08 205.041)",
    "cyan.600": "oklch(0.609 0.126 221.723)",
    "cyan.800": "oklch(0.45 0.085 224.283)",
    "cyan.900": "oklch(0.398 0.07 227.392)",
    "purple.600": "oklch(0.558 0.288 302.321)",
    "blue.600": "oklch(0.546 0.245 262.881)",
    "stone.400": "oklch(0.709 0.01 56.259)",
}
FONT_BODY = (
    'Inter, -apple-system, BlinkMacSystemFont, "Segoe UI", Helvetica, Arial, sans-serif, "Apple Color Emoji", '
    '"Segoe UI Emoji", "Segoe UI Symbol"'
)
FONT_MONO = 'SFMono-Regular,Menlo,Monaco,Consolas,"Liberation Mono","Courier New",monospace'

# Semantic names the pages and charts use -> (light, dark) palette steps, as Airflow's semantic tokens map them.
# Chart series take Airflow's task-state colours: success green, failed red, running cyan, deferred purple,
# up_for_retry yellow/amber; a capacity wait is queued's stone.
SEMANTIC = {
    "bg": ("white", "black"),
    "bg-subtle": ("gray.50", "gray.950"),
    "bg-muted": ("gray.100", "gray.900"),
    "fg": ("black", "gray.50"),
    "fg-muted": ("gray.600", "gray.400"),
    "border": ("gray.200", "gray.800"),
    "border-emphasized": ("gray.300", "gray.700"),
    "link": ("brand.600", "brand.200"),
    "success": ("green.600", "green.600"),
    "success-subtle": ("green.100", "green.900"),
    "success-fg": ("green.800", "green.200"),
    "failed": ("red.600", "red.600"),
    "failed-subtle": ("red.100", "red.900"),
    "failed-fg": ("red.800", "red.200"),
    "warning": ("amber.600", "amber.600"),
    "warning-subtle": ("amber.100", "amber.900"),
    "warning-fg": ("amber.800", "amber.200"),
    "running": ("cyan.600", "cyan.600"),
    "running-subtle": ("cyan.100", "cyan.900"),
    "running-fg": ("cyan.800", "cyan.200"),
    "deferred": ("purple.600", "purple.600"),
    "wait": ("stone.400", "stone.400"),
    "on-demand": ("gray.400", "gray.600"),
    "accent": ("blue.600", "blue.600"),
}


def _vars(mode: int) -> str:
    return ";".join(f"--{name}:{PALETTE[steps[mode]]}" for name, steps in SEMANTIC.items())


def theme_css() -> str:
    """The custom properties (light by default; dark by the system's preference unless Airflow's UI chose
    light, or when it chose dark) and the page's base styles on them."""
    return (
        f":root{{{_vars(0)};color-scheme:light}}"
        f"@media (prefers-color-scheme: dark){{:root:not(.light){{{_vars(1)};color-scheme:dark}}}}"
        f":root.dark{{{_vars(1)};color-scheme:dark}}"
        f"body{{font-family:{FONT_BODY};background:var(--bg);color:var(--fg)}}"
        f"code,pre{{font-family:{FONT_MONO}}}"
    )


# Runs before the page paints: Airflow's chosen mode (same origin, same localStorage) wins over the system's.
MODE_SCRIPT = """<script>
try {
  const chosen = localStorage.getItem("theme");
  if (chosen === "light" || chosen === "dark") document.documentElement.classList.add(chosen);
} catch (e) {}
</script>"""
