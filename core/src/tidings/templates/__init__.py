"""Reply templates: company-wide and personal, grouped by title, rendered in a sandbox."""

from tidings.templates.render import MissingVariable, TemplateError, TemplateInvalid, render
from tidings.templates.service import Template, TemplateGroup, TemplateScope, TemplatesService

__all__ = [
    "MissingVariable",
    "Template",
    "TemplateError",
    "TemplateGroup",
    "TemplateInvalid",
    "TemplateScope",
    "TemplatesService",
    "render",
]
