"""Why a document was not used: raised by the parsers, reported per file by ingestion (the rest of a batch goes on)."""


class ParseError(ValueError):
    """The reason a document was skipped."""


class DocumentTooLarge(ParseError):
    """Over a size limit (a PDF's page count or page size): an upload of it is refused with 413."""
