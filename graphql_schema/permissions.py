"""Permission classes: who may resolve a field."""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission
from strawberry.types import Info


class IsAuthenticated(BasePermission):
    """A person signed in with a valid token: the field acts as their own user, which a
    service's API key never is (FORBIDDEN). Strawberry shares one instance across requests, so
    the reason for a refusal is raised (the caller's own error), never stored on the instance."""

    message = "authentication required: send 'Authorization: Bearer <token>'"
    error_extensions = {"code": "UNAUTHENTICATED"}

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        info.context.require_user()
        return True


class IsAdmin(BasePermission):
    """An admin; an anonymous caller gets UNAUTHENTICATED, a non-admin FORBIDDEN."""

    message = "admin role required"
    error_extensions = {"code": "FORBIDDEN"}

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        principal = info.context.require_principal()
        return principal.is_admin


class OwnerOrAdmin(BasePermission):
    """The caller is the user in question (``userId`` argument or the parent User) or an admin."""

    message = "you may read only your own profile and ratings"
    error_extensions = {"code": "FORBIDDEN"}

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        principal = info.context.require_principal()
        user_id = kwargs.get("user_id", getattr(source, "user_id", None))
        return user_id is not None and principal.may_read_user(int(user_id))
