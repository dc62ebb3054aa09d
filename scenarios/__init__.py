# Marks this folder of scenario files as package data (installed as `sim.scenarios`), so that
# `recloop run quickstart` works after a plain `pip install`. No code lives here.
