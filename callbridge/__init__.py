"""callbridge: Infobip Calls API callers in conversation with an OpenAI Realtime agent.

The design keeps the code in three top-level folders (``services/``, ``shared/``,
``simulators/``); this package installs them under one name, ``callbridge.services``,
``callbridge.shared`` and ``callbridge.simulators``, so that nothing else lands at the top of
site-packages. The entries here are symbolic links to those folders (setuptools follows them
when it builds a wheel; an editable install and a source checkout import them in place).
"""
