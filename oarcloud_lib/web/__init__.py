"""The web service (F.a.2, docs/web.md): the dashboard's pages and the JSON
HTTP API, served on the OAR server by the server's services.

    service   the process: HTTPS through gunicorn, its certificate, its URL
    app       the Flask application: logins, sessions, CSRF, errors
    data      what pages and the API show, read as who asks (the catalog's
              row-level security for users, as the CLI reads it)
    pages     the HTML pages (templates/web/)
    api       /api/v1/ (docs/web.md lists its endpoints)
"""
