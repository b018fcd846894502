"""The one exception a user sees: raised at the boundary, printed by the CLI in one line."""


class AsdError(Exception):
    """A problem the user can act on (a bad file, a missing folder, an impossible setting).

    The message names the file or setting and fits on one line; the CLI prints it as
    ``asd: <message>`` without a traceback.
    """
