"""CenterPoint (OpenPCDet ``CenterPoint``): VFE -> sparse 3D backbone -> BEV -> 2D backbone -> CenterHead."""
from rdd.models.registries import DETECTORS

from .detector3d_template import Detector3DTemplate


@DETECTORS.register()
class CenterPoint(Detector3DTemplate):
    """Single-stage center-based detector; the dense head does target assignment, loss and decoding."""

    def __init__(self, model_cfg, num_class, dataset):
        super().__init__(model_cfg=model_cfg, num_class=num_class, dataset=dataset)
        self.module_list = self.build_networks()

    def forward(self, batch_dict):
        """Train: ``(ret_dict{'loss'}, tb_dict{'loss_rpn', **head}, disp_dict)``; eval: ``(pred_dicts, recall_dict)``.

        ``batch_dict`` gains the intermediate keys (``voxel_features``, ``spatial_features``, ...) as in
        OpenPCDet; the detector itself never writes into the caller's tensors (e.g. ``gt_boxes``).
        """
        for cur_module in self.module_list:
            batch_dict = cur_module(batch_dict)
        if self.training:
            loss, tb_dict, disp_dict = self.get_training_loss()
            return {'loss': loss}, tb_dict, disp_dict
        return self.post_processing(batch_dict)

    def get_training_loss(self):
        """``(loss, tb_dict, disp_dict)`` from ``dense_head.get_loss()``; ``tb_dict['loss_rpn']`` is a float."""
        loss_rpn, tb_dict = self.dense_head.get_loss()
        tb_dict = {'loss_rpn': float(loss_rpn.item()), **tb_dict}
        return loss_rpn, tb_dict, {}

    def post_processing(self, batch_dict):
        """Return the head's ``final_box_dicts`` (already NMS-ed, 1-based labels) and the recall record."""
        thresh_list = self.model_cfg.get('POST_PROCESSING', {}).get('RECALL_THRESH_LIST', [0.3, 0.5, 0.7])
        final_pred_dicts = batch_dict['final_box_dicts']
        recall_dict = {}
        for index in range(batch_dict['batch_size']):
            recall_dict = self.generate_recall_record(
                box_preds=final_pred_dicts[index]['pred_boxes'], recall_dict=recall_dict,
                batch_index=index, data_dict=batch_dict, thresh_list=thresh_list)
        return final_pred_dicts, recall_dict
