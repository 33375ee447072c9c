"""What every hub list shares: totals from PostgreSQL's estimate on large tables, no facet counts, read-only records."""

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property

from subscriptions import selectors

# Below this many rows (by the planner's estimate) an exact COUNT(*) is cheap, so
# small tables, and tests, show exact figures.
EXACT_COUNT_BELOW = 10_000


class EstimatedCountPaginator(Paginator):
    """A paginator that counts an unfiltered PostgreSQL table from its statistics instead of COUNT(*).

    COUNT(*) reads the whole table (seconds at a million deliveries), and the
    admin runs it on every list page. The planner's estimate, from the statistics
    autovacuum's ANALYZE keeps, is a good enough total for a paginator. A filtered
    or searched list, a small table, and SQLite get the exact count.
    """

    estimated = False

    @cached_property
    def count(self) -> int:
        estimate = self._estimate()
        if estimate is None:
            return super().count
        self.estimated = True
        return estimate

    def _estimate(self) -> int | None:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return None
        query = queryset.query
        if query.where or query.distinct or query.combinator or query.is_sliced:
            return None
        estimate = selectors.estimated_rows(queryset.order_by())
        if estimate is None or estimate < EXACT_COUNT_BELOW:
            return None
        return estimate


class LargeListAdmin(admin.ModelAdmin):
    """Lists over tables that grow to millions of rows: estimated totals, no facet counts."""

    paginator = EstimatedCountPaginator
    # The "N total" beside a filtered count would be a second COUNT(*) over the whole table.
    show_full_result_count = False
    # Facets run one COUNT per filter choice over the filtered table.
    show_facets = admin.ShowFacets.NEVER


class ReadOnlyAdmin(LargeListAdmin):
    """Records the hub writes itself: operators look, they do not edit."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
