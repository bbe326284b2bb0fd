"""ipywidgets views over library functions (installed as ``agreid_kit.widgets``).

Each widget is a thin view over ``agreid_kit.analysis`` and ``agreid_kit.viz``; its child
widgets are attributes so notebooks and tests can drive them; ``display(w)`` shows ``w.widget``.
"""

from .embedding_explorer import EmbeddingExplorer
from .rank_list_browser import RankListBrowser
from .timestep_tradeoff import TimestepTradeoff
from .view_condition_map import ViewConditionMap

__all__ = ["EmbeddingExplorer", "RankListBrowser", "TimestepTradeoff", "ViewConditionMap"]
