"""Template helpers of the hub's admin lists."""

from django import template

from subscriptions.admin.filters import InputFilter

register = template.Library()


@register.simple_tag
def active_filters(changelist: object) -> list[tuple[str, str]]:
    """(filter title, what it selects) for each filter in force, as the sidebar names the choice."""
    found = []
    for spec in changelist.filter_specs:
        if isinstance(spec, InputFilter):
            if spec.value():
                found.append((spec.title, spec.value()))
            continue
        choices = list(spec.choices(changelist))
        # The first choice is "All": selected when the filter is not in force.
        chosen = [str(choice["display"]) for choice in choices[1:] if choice.get("selected")]
        if chosen:
            found.append((spec.title, ", ".join(chosen)))
    return found
