"""The lesson side's checks of fine-tuning data, which notebook 05 and its exercises use (no server needed):
`formats` (the JSONL formats, chat and prompt/completion, and their problems by line) and `prepare`
(``gptnb prepare-data``: a CSV or JSONL of examples checked and written as fine-tuning JSONL, with token counts).
"""
