"""Entry-point wrapper shared by the data-preparation scripts (``tools/create_data.py``,
``tools/make_synthetic_nuscenes.py``)."""
import sys

#: Errors caused by the user's input (missing/existing files, bad values or keys): reported as one line.
USER_ERRORS = (FileNotFoundError, FileExistsError, ValueError, KeyError)


def run_cli(main):
    """Call ``main()`` and exit with its return code; a :data:`USER_ERRORS` exception exits with status 1 and
    ``error: <message>`` on stderr instead of a traceback."""
    try:
        sys.exit(main())
    except USER_ERRORS as exc:
        sys.exit(f'error: {exc}')
