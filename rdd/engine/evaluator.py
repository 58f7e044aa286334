"""Evaluation: run a detector over a dataloader, gather predictions from every rank, score each sample once.

Ranks exchange their predictions with ``all_gather_object`` (no shared filesystem needed); rank 0 merges them
in the sampler's interleaved order, drops the duplicates a padded ``DistributedSampler`` adds, calls
``dataset.evaluation`` (the nuScenes devkit) and writes ``metrics.json`` and ``result.pkl``.
"""
import itertools
import json
import math
import pickle
import time
from pathlib import Path

import torch
import tqdm

from rdd.engine import dist
from rdd.engine.batch import load_data_to_device


def sample_key(anno):
    """Identity of one prediction record: the sample token when present, else the frame id."""
    meta = anno.get('metadata')
    if isinstance(meta, dict) and meta.get('token') is not None:
        return str(meta['token'])
    return str(anno.get('frame_id'))


def merge_rank_predictions(parts):
    """Interleave per-rank lists (rank r holds samples r, r+W, ... as DistributedSampler gives them) and keep
    the first record of every sample."""
    merged, seen = [], set()
    for group in itertools.zip_longest(*parts):
        for anno in group:
            if anno is None:
                continue
            key = sample_key(anno)
            if key not in seen:
                seen.add(key)
                merged.append(anno)
    return merged


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


class Evaluator:
    """Evaluates detectors on ``dataloader`` (whose dataset provides ``generate_prediction_dicts`` and
    ``evaluation``). ``device``: where batches go; ``logger``: optional ``logging.Logger``."""

    def __init__(self, dataloader, class_names, device, logger=None, show_progress=True):
        self.dataloader, self.dataset = dataloader, dataloader.dataset
        self.class_names, self.device = list(class_names), torch.device(device)
        self.logger, self.show_progress = logger, show_progress

    def _log(self, msg, *args):
        if self.logger is not None:
            self.logger.info(msg, *args)

    @torch.no_grad()
    def predict(self, model, save_dir=None, infer_time=False, warmup_batches=2):
        """This rank's prediction records (``generate_prediction_dicts`` format) and timing/recall stats.

        ``save_dir``: also write per-sample prediction files there (``--save_to_file``). With ``infer_time``
        the forward pass is timed per batch, synchronising on GPU, skipping ``warmup_batches``.
        """
        model.eval()
        annos, times, batch_sizes, recall = [], [], [], {}
        progress = tqdm.tqdm(total=len(self.dataloader), desc='eval', leave=False, dynamic_ncols=True) \
            if self.show_progress and dist.get_rank() == 0 else None
        for i, batch in enumerate(self.dataloader):
            load_data_to_device(batch, self.device)
            if infer_time:
                _sync(self.device)
                start = time.perf_counter()
            pred_dicts, ret_dict = model(batch)
            if infer_time:
                _sync(self.device)
                if i >= warmup_batches or len(self.dataloader) <= warmup_batches:
                    times.append(time.perf_counter() - start)
                    batch_sizes.append(int(batch['batch_size']))
            for key, val in (ret_dict or {}).items():
                if isinstance(val, (int, float)) or (torch.is_tensor(val) and val.numel() == 1):
                    recall[key] = recall.get(key, 0.0) + float(val)
            annos += self.dataset.generate_prediction_dicts(
                batch, pred_dicts, self.class_names, output_path=Path(save_dir) if save_dir else None)
            if progress is not None:
                progress.update(1)
        if progress is not None:
            progress.close()
        return annos, {'times': times, 'batch_sizes': batch_sizes, 'recall': recall}

    def evaluate(self, model, output_dir, save_to_file=False, infer_time=False):
        """Predict on every rank, merge on rank 0, run the devkit; returns the ``result_dict`` on rank 0 and
        ``{}`` elsewhere. Writes ``results_nusc.json`` (by the dataset), ``metrics.json`` and ``result.pkl``
        into ``output_dir`` and logs the devkit summary (with ``mAP:`` and ``NDS:`` lines)."""
        output_dir = Path(output_dir)
        if dist.get_rank() == 0:
            output_dir.mkdir(parents=True, exist_ok=True)
        annos, stats = self.predict(model, save_dir=output_dir / 'final_result' / 'data' if save_to_file else None,
                                    infer_time=infer_time)
        gathered = dist.all_gather_object((annos, stats))
        if dist.get_rank() != 0:
            return {}
        det_annos = merge_rank_predictions([g[0] for g in gathered])
        if len(det_annos) != len(self.dataset):
            raise RuntimeError(f'evaluation gathered {len(det_annos)} distinct samples, the dataset has '
                               f'{len(self.dataset)}')
        with open(output_dir / 'result.pkl', 'wb') as f:
            pickle.dump(det_annos, f)
        result_str, result_dict = self.dataset.evaluation(det_annos, self.class_names, output_path=str(output_dir))
        result_dict = dict(result_dict)
        result_dict.update(self._recall_metrics([g[1]['recall'] for g in gathered]))
        if infer_time:
            result_dict.update(self._latency([g[1] for g in gathered]))
        summary = self.summary_text(result_str, result_dict)
        # the dataset already logged ``result_str``; add the plain ``mAP: <float>`` / ``NDS: <float>`` lines
        self._log('\n%s', summary[len(result_str or ''):].strip('\n'))
        with open(output_dir / 'metrics.json', 'w', encoding='utf-8') as f:
            json.dump(_jsonable(result_dict), f, indent=2)
        self._log('Result is saved to %s', output_dir)
        return result_dict

    @staticmethod
    def summary_text(result_str, result_dict):
        """The devkit summary, with ``mAP: <float>`` / ``NDS: <float>`` lines added if it lacks them."""
        text = result_str or ''
        for name, keys in (('mAP', ('mAP', 'mean_ap')), ('NDS', ('NDS', 'nd_score'))):
            if f'\n{name}: ' not in '\n' + text:
                value = next((result_dict[k] for k in keys if k in result_dict), None)
                if value is not None:
                    text += f'\n{name}: {float(value):.4f}'
        if 'infer_time_ms' in result_dict:
            text += f"\nInference latency: {result_dict['infer_time_ms']:.1f} ms/batch " \
                    f"({result_dict['infer_time_ms_per_sample']:.1f} ms/sample)"
        return text

    @staticmethod
    def _recall_metrics(recalls):
        total = {}
        for rec in recalls:
            for k, v in rec.items():
                total[k] = total.get(k, 0.0) + v
        gt = total.get('gt', 0.0)
        return {f'recall/{k}': v / gt for k, v in total.items() if k != 'gt' and gt > 0}

    @staticmethod
    def _latency(stats):
        times = [t for s in stats for t in s['times']]
        sizes = [b for s in stats for b in s['batch_sizes']]
        if not times:
            return {}
        return {'infer_time_ms': 1000.0 * sum(times) / len(times),
                'infer_time_ms_per_sample': 1000.0 * sum(times) / max(sum(sizes), 1)}


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if torch.is_tensor(obj) or hasattr(obj, 'item'):
        try:
            obj = obj.item()
        except (ValueError, RuntimeError):
            return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj if isinstance(obj, (int, float, str, bool)) or obj is None else str(obj)
