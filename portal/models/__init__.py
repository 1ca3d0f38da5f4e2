from portal.models.accounts import Membership, Organization, Role, UserBudget
from portal.models.keys import APIKey
from portal.models.ownership import OwnedModel, OwnedQuerySet, Principal, Visibility
from portal.models.registry import ModelFile, ModelRepo, ModelVersion

__all__ = [
    "APIKey",
    "Membership",
    "ModelFile",
    "ModelRepo",
    "ModelVersion",
    "Organization",
    "OwnedModel",
    "OwnedQuerySet",
    "Principal",
    "Role",
    "UserBudget",
    "Visibility",
]
