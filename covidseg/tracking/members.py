"""The group server's members (MLflow's basic-auth app, ``docker-compose.yml``).

A member may create runs in every experiment — the Default one, those other members made and
those made later — and log to them, but may not delete runs or experiments that are not theirs
or change anyone's permissions: MLflow's ``EDIT`` (``MANAGE`` stays with an experiment's
creator and the admins).  The server's ``default_permission`` stays ``READ``, so a login that is
not a member only reads.  The grant is one role, ``members``, holding ``EDIT`` on experiment
``*`` (any experiment, now or later) in MLflow's ``default`` workspace; adding a member creates
the login (when new) and assigns the role.  ``covidseg add-member NAME`` does it as the admin.
"""

from __future__ import annotations

from covidseg.base.errors import ConfigError, TrackingUnavailable, first_line

MEMBERS_ROLE = "members"
MEMBER_PERMISSION = "EDIT"
# what the role grants EDIT on: every experiment (runs, logged models) and every registered
# model (a member adds versions to one another made)
MEMBER_RESOURCES = ("experiment", "registered_model")
WORKSPACE = "default"  # MLflow's only workspace while workspaces are off


def _auth_client(uri: str):
    """MLflow's basic-auth client.  Importing it reads an auth config file even on the client;
    MLflow's own holds non-ASCII text that an ASCII locale (a bare CI shell) cannot decode, so
    without ``MLFLOW_AUTH_CONFIG_PATH`` a minimal one is written (the server's config is the
    server's; the client uses none of it)."""
    import os
    import tempfile

    if not os.environ.get("MLFLOW_AUTH_CONFIG_PATH"):
        ini = os.path.join(tempfile.mkdtemp(prefix="covidseg-auth-"), "client.ini")
        with open(ini, "w", encoding="ascii") as fh:
            fh.write("[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite://\n"
                     "admin_username = admin\nadmin_password = unused-on-the-client\n"
                     "authorization_function = "
                     "mlflow.server.auth:authenticate_request_basic_auth\n")
        os.environ["MLFLOW_AUTH_CONFIG_PATH"] = ini
    import warnings

    with warnings.catch_warnings():  # MLflow's server module imports a deprecated Starlette part
        warnings.filterwarnings("ignore", message=r".*starlette\.middleware\.wsgi is deprecated")
        from mlflow.server import get_app_client

        return get_app_client("basic-auth", tracking_uri=uri)


def members_role(client):
    """The ``members`` role (made on first use, with EDIT on every experiment and registered
    model)."""
    for role in client.list_roles(WORKSPACE):
        if role.name == MEMBERS_ROLE:
            break
    else:
        role = client.create_role(workspace=WORKSPACE, name=MEMBERS_ROLE,
                                  description="covidseg: log runs to every experiment")
    granted = {(p.resource_type, p.resource_pattern, p.permission)
               for p in client.list_role_permissions(role.id)}
    for resource in MEMBER_RESOURCES:
        if (resource, "*", MEMBER_PERMISSION) not in granted:
            client.add_role_permission(role.id, resource, "*", MEMBER_PERMISSION)
    return role


def add_member(username: str, password: str | None, uri: str) -> str:
    """Create ``username`` (unless it exists; ``password`` then unused) and make it a member;
    what was done, as one line.  Needs the admin's credentials in
    ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``."""
    from mlflow.exceptions import MlflowException

    if not uri.startswith(("http://", "https://")):
        raise ConfigError(f"add-member talks to a login-protected server: MLFLOW_TRACKING_URI is "
                          f"{uri!r}")
    client = _auth_client(uri)
    try:
        role = members_role(client)
        try:
            client.get_user(username)
            created = False
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            if not password:
                raise ConfigError(f"{username} is a new login: give its password in "
                                  "COVIDSEG_MEMBER_PASSWORD (never on the command line)") from exc
            client.create_user(username, password)
            created = True
        if all(r.id != role.id for r in client.list_user_roles(username)):
            client.assign_role(username, role.id)
    except MlflowException as exc:
        if exc.error_code in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
            raise ConfigError("add-member needs the server's admin: set MLFLOW_TRACKING_USERNAME "
                              "/ MLFLOW_TRACKING_PASSWORD to the admin's login") from exc
        raise TrackingUnavailable(f"add-member {username}: {first_line(exc)}") from exc
    return (f"{username} ({'new login' if created else 'existing login'}) is a member: may log "
            f"runs to every experiment of {uri}, the Default one included, and may not delete "
            "or re-permission other members' work")


def permission_denied(exc: Exception, action: str, experiment: str) -> ConfigError | None:
    """A 403 from the server as one line — which user lacks which permission on which experiment,
    and who can grant it — or None when ``exc`` is not one."""
    import os

    if getattr(exc, "error_code", "") != "PERMISSION_DENIED":
        return None
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or "this anonymous client"
    return ConfigError(f"user {user} may not {action} in experiment {experiment!r} (MLflow: "
                       f"Permission denied; it needs {MEMBER_PERMISSION}): the server's admin "
                       f"grants it to every experiment with `covidseg add-member {user}`, the "
                       "experiment's owner to this one in the MLflow UI")
